"""The training loop: the reference recipe (AdamW, warm-up + cosine per iteration, label smoothing,
augmentation, SpecAugment on the MFCC batch) on CPU or CUDA (mixed precision), with metrics.jsonl,
best (by validation accuracy) and last checkpoints, and bit-exact `--resume`. Under torchrun the
same loop runs DDP on every rank (`kwsdeploy.train.distributed`): the global batch is `batch_size`
whatever the world size, rank 0 alone writes.

Run directory: config.json, metrics.jsonl, best/ and last/ (checkpoints; last/ also holds the
training state), test_metrics.json, and curves.png + test_confusion.png when matplotlib is importable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kwsdeploy.atomic import ArtifactKind, write_file
import torch.nn.functional as F

from kwsdeploy.config import FeatureConfig
from kwsdeploy.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from kwsdeploy.train.distributed import (
    World, default_micro_batch, init_world, passes, plan_epoch, sync_gradients, train_loader,
)  # fmt: skip
from kwsdeploy.train.evaluate import evaluate_dataset, plot_confusion, plot_curves
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.resume import pack_train_state, unpack_train_state
from kwsdeploy.train.schedule import WarmupCosine
from kwsdeploy.train.throughput import WaitTimer, epoch_throughput, throughput_line


@dataclass
class TrainResult:
    """Where a run wrote its checkpoints and what it reached."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    best_valid_acc: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # under torchrun: this process's rank (only rank 0 wrote anything)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable CUDA request is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA but no CUDA device is available; use --device cpu.")
    return dev


def feature_config_for(cfg: TrainConfig) -> FeatureConfig:
    """The frontend a run trains with: the deployable (causal) preset unless told otherwise."""
    from kwsdeploy.models.registry import get_card

    n_mfcc = cfg.n_mfcc or get_card(cfg.model).n_mfcc
    return FeatureConfig.reference(n_mfcc) if cfg.features == "reference" else FeatureConfig.deployable(n_mfcc)


def _streams_in_context(model) -> bool:
    """Whether `model` can be trained with --stream-context (a causal step model with forward_window)."""
    if not getattr(model, "causal", False) or not hasattr(model, "forward_window"):
        return False
    return getattr(model, "readout", "mean") == "mean"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled index batches of one epoch, a pure function of (seed, epoch); a lone last clip is
    dropped (BatchNorm cannot train on a batch of one)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


class Trainer:
    """Trains one model on in-memory datasets of (waveform [16000], label) pairs."""

    def __init__(self, cfg: TrainConfig, train_set, valid_set, labels: Sequence[str], out_dir: str | os.PathLike,
                 data_summary: dict[str, Any] | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, world: World | None = None) -> None:
        if len(train_set) < 2:
            raise ValueError(f"The training split has {len(train_set)} clip(s); at least 2 are needed.")
        self.cfg, self.train_set, self.valid_set = cfg, train_set, valid_set
        self.labels = list(labels)
        self.out_dir = Path(out_dir)
        self.data_summary = dict(data_summary or {})
        self.world = world or World()
        self.progress = progress and self.world.is_main
        self.log = (log if self.world.is_main else None) or (lambda s: None)
        self.device = self.world.place(resolve_device(cfg.device))
        self.feature_config = feature_config_for(cfg)

    # -- set-up ---------------------------------------------------------------------------------
    def _build(self):
        from kwsdeploy.features import MFCC
        from kwsdeploy.models import create

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        model = create(cfg.model, num_classes=len(self.labels), n_mfcc=self.feature_config.n_mfcc, **cfg.model_config)
        if cfg.stream_context_s > 0 and not _streams_in_context(model):
            raise ValueError(
                f"--stream-context needs a causal model with an exact step form (tcresnet8-causal, "
                f"bcresnet1-causal, matchboxnet-causal, kwm-causal-* with readout 'mean'); {cfg.model} is not one."
            )
        if cfg.init_from:
            from kwsdeploy.train.warm_start import warm_start

            info = warm_start(model, Path(cfg.init_from), self.labels, self.feature_config)
            self.log(f"--init {cfg.init_from}: {info['copied']} tensors and {info['head_rows']} classifier rows copied")
        model.to(self.device)
        self.net = self.world.wrap(model, self.device)  # what the loop calls: the model or DDP around it
        if cfg.compile:
            model.compile()  # after wrap: SyncBatchNorm is in place before the forward is traced
        self.micro_batch = cfg.micro_batch or default_micro_batch(cfg.batch_size, self.world.size)
        mfcc = MFCC(self.feature_config).to(self.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = len(_epoch_batches(len(self.train_set), cfg.batch_size, cfg.seed, 0))
        scheduler = WarmupCosine(optimizer, cfg.lr, cfg.min_lr, round(cfg.warmup_epochs * steps_per_epoch),
                                 cfg.epochs * steps_per_epoch)
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = None
        if use_amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        return model, mfcc, optimizer, scheduler, scaler

    def _spec_augment(self, feats: torch.Tensor, gen: torch.Generator, step, mb) -> torch.Tensor:
        """SpecAugment drawn for the whole global batch (one draw per step whatever the world size),
        this micro-batch's rows applied."""
        from kwsdeploy.data.augment import spec_augment_keep

        if self._keep is None:
            self._keep = spec_augment_keep(step.size, feats.shape[-2], feats.shape[-1], gen)
        return feats.masked_fill(~self._keep[mb.positions].to(feats.device), 0.0)

    def _context_samples(self, model) -> int:
        """--stream-context in samples, rounded to whole packets of the step form (hop x time stride),
        so the clip's frames meet the pooling window as they do in a stream."""
        unit = self.feature_config.hop_length * int(getattr(model, "time_stride", 1))
        return int(round(self.cfg.stream_context_s * self.feature_config.sample_rate / unit)) * unit

    # -- one epoch -----------------------------------------------------------------------------
    def _train_epoch(self, epoch, model, mfcc, optimizer, scheduler, scaler) -> dict[str, float]:
        cfg = self.cfg
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        batches = _epoch_batches(len(self.train_set), cfg.batch_size, cfg.seed, epoch)
        plan = plan_epoch(batches, self.world.rank, self.world.size, self.micro_batch)
        loader = WaitTimer(iter(train_loader(self.train_set, plan, cfg.num_workers, self.device.type == "cuda")))
        gen = torch.Generator().manual_seed(cfg.seed * 7_000_003 + epoch)
        if self.world.rank:  # dropout draws of the other ranks: a function of (seed, rank, epoch)
            torch.manual_seed(cfg.seed * 1_000_003 + self.world.rank * 7_919 + epoch)
        model.train()
        net = self.net
        seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        bar = _Bar(self.progress, f"epoch {epoch + 1}/{cfg.epochs}", len(batches))
        with bar:
            for step, mb, last in passes(plan):
                if mb is step.micro[0]:
                    optimizer.zero_grad(set_to_none=True)
                    self._keep = None
                wave, target = next(loader)
                wave = wave.to(self.device, non_blocking=True).float()
                target = target.to(self.device, non_blocking=True).long()
                with torch.no_grad():
                    context = self._context_samples(model)
                    if context:  # the tail of another clip of the batch comes first, as in a stream
                        wave = torch.cat([torch.roll(wave, 1, dims=0)[:, -context:], wave], dim=1)
                    feats = mfcc(wave)
                    if cfg.spec_augment:
                        feats = self._spec_augment(feats, gen, step, mb)
                with sync_gradients(net, last):
                    with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                        enabled=self.amp_dtype is not None):
                        if context:
                            logits = net.forward_window(feats.unsqueeze(1), self.feature_config.clip_frames)
                        else:
                            logits = net(feats.unsqueeze(1))
                    loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"Loss became {loss.item()} at epoch {epoch + 1}; lower --lr.")
                    scaler.scale(loss if mb.loss_scale == 1.0 else loss * mb.loss_scale).backward()
                if mb.real:
                    seen += mb.real
                    loss_sum += loss.item() * mb.real
                    correct += int((logits.argmax(1) == target).sum())
                if not last:
                    continue
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                rate = seen / max(1e-9, time.perf_counter() - t0)
                bar.advance(f"loss {loss_sum / max(seen, 1):.4f}  acc {correct / max(seen, 1):.2%}  {rate:.0f} clips/s")
        return epoch_throughput(self.world, seen, correct, loss_sum, time.perf_counter() - t0, loader.waited)

    # -- the run -------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train `cfg.epochs` epochs (or continue a run); `stop_after` ends this call early (tests)."""
        cfg = self.cfg
        out = self.out_dir
        best_dir, last_dir, metrics_path = out / "best", out / "last", out / "metrics.jsonl"
        model, mfcc, optimizer, scheduler, scaler = self._build()
        start_epoch, best_acc, best_epoch, history = 0, None, None, []
        if resume and not (last_dir / "card.json").is_file():  # killed before its first epoch ended
            self.log(f"{out} has no finished epoch to resume: starting it again from epoch 1")
            resume = False
        if resume:
            loaded = load_checkpoint(last_dir)
            model.load_state_dict(loaded.model.state_dict(), strict=True)
            counters = unpack_train_state(TrainState.read(last_dir), optimizer, scheduler, scaler)
            start_epoch, best_acc, best_epoch = counters["next_epoch"], counters["best_acc"], counters["best_epoch"]
            history = [r for r in _read_jsonl(metrics_path) if r["epoch"] <= start_epoch]
            self.log(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")
        else:
            self.world.main_only(lambda: _start_run_dir(out, cfg))
        main = self.world.is_main  # rank 0 alone writes; every rank computes the same rows
        if main:
            _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
        first_new = len(history)
        end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        for epoch in range(start_epoch, end_epoch):
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.lr}
            row.update(self._train_epoch(epoch, model, mfcc, optimizer, scheduler, scaler))
            if self.valid_set is not None and len(self.valid_set):
                vm = evaluate_dataset(model, self.feature_config, self.valid_set, self.labels,
                                      cfg.eval_batch_size, str(self.device), world=self.world,
                                      num_workers=cfg.num_workers)
                row.update(valid_loss=vm["loss"], valid_acc=vm["accuracy"], valid_macro_f1=vm["macro_f1"])
            score = row.get("valid_acc", row["train_acc"])
            history.append(row)
            training = self._summary(epoch + 1)
            metrics = {k: v for k, v in row.items() if k != "lr"}
            if best_acc is None or score > best_acc:
                best_acc, best_epoch = score, epoch + 1
                if main:
                    save_checkpoint(best_dir, model, self.labels, self.feature_config,
                                    model_config=cfg.model_config, training=training, metrics=metrics)
            counters = {"next_epoch": epoch + 1, "best_acc": best_acc, "best_epoch": best_epoch}
            if main:
                save_checkpoint(last_dir, model, self.labels, self.feature_config, model_config=cfg.model_config,
                                training=training, metrics=metrics,
                                train_state=pack_train_state(optimizer, scheduler, scaler, counters))
                _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
            self.log(_epoch_line(row, cfg.epochs))
        if main and history:
            plot_curves(history, out / "curves.png")
        line = throughput_line(history[first_new:])
        if line:
            self.log(line)
        self.world.barrier()  # the others read best/ and last/ only once rank 0 has written them
        return TrainResult(out, best_dir, last_dir, best_acc, best_epoch, history, rank=self.world.rank)

    def _summary(self, epochs_done: int) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "epochs_done": epochs_done, "data": self.data_summary,
                "device": str(self.device),
                "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                "world_size": self.world.size, "micro_batch": self.micro_batch}


def _start_run_dir(out: Path, cfg: TrainConfig) -> None:
    """A new run: refuse a directory that holds one, then write config.json."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "last").exists() or _read_jsonl(out / "metrics.jsonl"):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
    if any(out.iterdir()) and not RUN.holds(out):
        raise ValueError(f"--out {out} is a non-empty directory that is not a kwsdeploy run (no config.json "
                         "written by 'kwsdeploy train'): choose a new or empty --out.")
    _write_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=1) + "\n")


RUN = ArtifactKind("training run", "config.json", lambda d: isinstance(d, dict) and {"model", "epochs", "lr"} <= set(d))


def train(cfg: TrainConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, stop_after: int | None = None, log: Callable[[str], None] | None = None,
          test: bool = True) -> TrainResult:
    """Train on a prepared directory (labels.json + train/valid/test lists); evaluate `best` on test."""
    from kwsdeploy.data.dataset import KwsDataset, load_labels

    out = Path(out_dir)
    if resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise ValueError(f"{out} holds no run to resume (no config.json); start one without --resume.")
        keep = {"device": cfg.device, "num_workers": cfg.num_workers, "amp": cfg.amp, "threads": cfg.threads,
                "compile": cfg.compile}  # how to run, not what to learn
        saved_cfg = TrainConfig.from_dict(json.loads(saved.read_text())).with_overrides(**keep)
        cfg = dataclasses.replace(saved_cfg, micro_batch=cfg.micro_batch)  # None: the default for this world
    world = init_world(resolve_device(cfg.device))
    labels = load_labels(data_dir)
    with world.main_first():  # rank 0 decodes (and writes the disk caches); the others then map them
        train_set = KwsDataset(data_dir, "train", augment=cfg.augment, seed=cfg.seed, gain_db=cfg.gain_db,
                               noise_snr_db=cfg.noise_snr_db, speaker=cfg.speaker_augment())
        valid_set = _optional_split(KwsDataset, data_dir, "valid")
        test_set = _optional_split(KwsDataset, data_dir, "test") if test else None
    summary = {"dir": Path(data_dir).name, "labels": labels, "train_clips": len(train_set),
               "valid_clips": len(valid_set) if valid_set is not None else 0, **data_sources(data_dir)}
    trainer = Trainer(cfg, train_set, valid_set, labels, out, data_summary=summary, progress=progress, log=log,
                      world=world)
    result = trainer.fit(resume=resume, stop_after=stop_after)
    log = log if world.is_main else None
    has_test = test_set is not None and len(test_set) and result.best_dir.exists()
    if has_test:
        best = load_checkpoint(result.best_dir)
        tm = evaluate_dataset(best.model, best.feature_config, test_set, labels, cfg.eval_batch_size,
                              str(trainer.device), world=world)
    if has_test and world.is_main:
        _write_atomic(out / "test_metrics.json", json.dumps(tm, indent=1) + "\n")
        plot_confusion(tm, out / "test_confusion.png")  # only when matplotlib is importable
        metrics = dict(best.card.get("metrics", {}), test_acc=tm["accuracy"], test_macro_f1=tm["macro_f1"])
        training = dict(best.card.get("training", {}), data=dict(summary, test_clips=len(test_set)))
        save_checkpoint(result.best_dir, best.model, labels, best.feature_config,
                        model_config=best.card.get("model_config"), training=training, metrics=metrics)
        log and log(f"best (epoch {result.best_epoch}) on test: accuracy {tm['accuracy']:.2%}, "
                    f"macro F1 {tm['macro_f1']:.4f}")
    world.barrier()
    world.close()
    return result


def data_sources(data_dir) -> dict[str, Any]:
    """What the card says about where a prepared set's clips came from: its corpus, and the extra
    training trees, each with its name and source (a synthetic tree says SYNTHETIC in its source)."""
    from kwsdeploy.data.prepared import audio_root, load_meta

    try:
        meta = load_meta(data_dir)
    except ValueError:
        return {}
    out: dict[str, Any] = {"corpus": meta.get("corpus")}
    extra = []
    for rel in meta.get("extra_train", []):
        marker = audio_root(data_dir, meta) / rel / "kwsdeploy_corpus.json"
        info = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
        extra.append({"name": info.get("name", Path(rel).name), "source": info.get("source", "unknown"),
                      "voices": len(info.get("voices", [])) or None})
    if extra:
        out["extra_train"] = extra
        out["synthetic"] = any("SYNTHETIC" in str(e["source"]).upper() for e in extra)
    return out


def _optional_split(cls, data_dir, split):
    """The split's dataset, or None when the prepared directory has no such split."""
    if not (Path(data_dir) / f"{split}.jsonl").is_file():
        return None
    return cls(data_dir, split)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    s = (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, train acc {row['train_acc']:.2%}, "
         f"{row['clips_per_s']:.0f} clips/s, {row['epoch_time_s']:.1f} s")
    if "valid_acc" in row:
        s += f"; valid acc {row['valid_acc']:.2%}, macro F1 {row['valid_macro_f1']:.4f}"
    return s


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_atomic(path: Path, text: str) -> None:
    write_file(path, text)


class _Bar:
    """A rich progress bar (on stderr) that shows loss/accuracy/throughput; silent when disabled."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        self.enabled, self.title, self.total = enabled, title, total
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                                      console=Console(stderr=True), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.title, total=self.total, stats="")
        return self

    def advance(self, stats: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, stats=stats)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
