"""The training loop: the reference recipe (`kwsdeploy.train.optimizer`, `.epoch`) for `cfg.epochs`
epochs on CPU or CUDA, with validation, metrics.jsonl, best (by validation accuracy) and last
checkpoints, and bit-exact `--resume`. Under torchrun the same loop runs DDP on every rank
(`kwsdeploy.train.distributed`): the global batch is `batch_size` whatever the world size, rank 0
alone writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kwsdeploy.train.best import Best, epoch_score
from kwsdeploy.train.build import Parts, build_parts, feature_config_for, resolve_device
from kwsdeploy.train.checkpoint import save_checkpoint
from kwsdeploy.train.distributed import World
from kwsdeploy.train.epoch import train_epoch
from kwsdeploy.train.evaluate import evaluate_dataset, plot_curves
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.progress import epoch_line
from kwsdeploy.train.resume import pack_train_state, restore_run
from kwsdeploy.train.run_dir import RunDir
from kwsdeploy.train.throughput import throughput_line


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

    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train `cfg.epochs` epochs (or continue a run); `stop_after` ends this call early (tests)."""
        cfg, run = self.cfg, RunDir(self.out_dir)
        parts = build_parts(cfg, self.labels, self.feature_config, len(self.train_set), self.world, self.device,
                            self.log)
        start_epoch, best, history = 0, Best(), []
        if resume and not run.has_finished_epoch():  # killed before its first epoch ended
            self.log(f"{run.out} has no finished epoch to resume: starting it again from epoch 1")
            resume = False
        if resume:
            start_epoch, best, history = restore_run(run, parts.model, parts.optimizer, parts.scheduler, parts.scaler)
            self.log(f"resuming {run.out} at epoch {start_epoch + 1}/{cfg.epochs}")
        else:
            self.world.main_only(lambda: run.start(cfg))
        main = self.world.is_main  # rank 0 alone writes; every rank computes the same rows
        if main:
            run.write_metrics(history)
        first_new = len(history)
        end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        for epoch in range(start_epoch, end_epoch):
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": parts.scheduler.lr}
            row.update(train_epoch(epoch, parts, cfg, self.train_set, self.feature_config, self.world, self.device,
                                   self.progress))
            row.update(self._validate(parts))
            history.append(row)
            improved = best.offer(epoch_score(row), epoch + 1)
            if main:
                self._save(run, parts, row, improved, best.counters(next_epoch=epoch + 1))
                run.write_metrics(history)
            self.log(epoch_line(row, cfg.epochs))
        if main and history:
            plot_curves(history, run.out / "curves.png")
        line = throughput_line(history[first_new:])
        if line:
            self.log(line)
        self.world.barrier()  # the others read best/ and last/ only once rank 0 has written them
        return TrainResult(run.out, run.best, run.last, best.acc, best.epoch, history, rank=self.world.rank)

    def _validate(self, parts: Parts) -> dict[str, float]:
        """Validation metrics of the epoch's model ({} without a validation split)."""
        if self.valid_set is None or not len(self.valid_set):
            return {}
        vm = evaluate_dataset(parts.model, self.feature_config, self.valid_set, self.labels, self.cfg.eval_batch_size,
                              str(self.device), world=self.world, num_workers=self.cfg.num_workers)
        return {"valid_loss": vm["loss"], "valid_acc": vm["accuracy"], "valid_macro_f1": vm["macro_f1"]}

    def _save(self, run: RunDir, parts: Parts, row: dict[str, Any], improved: bool, counters: dict[str, Any]) -> None:
        """best/ when the epoch improved on it, then last/ with the training state."""
        card = {"model_config": self.cfg.model_config, "training": self._summary(row["epoch"], parts),
                "metrics": {k: v for k, v in row.items() if k != "lr"}}
        if improved:
            save_checkpoint(run.best, parts.model, self.labels, self.feature_config, **card)
        state = pack_train_state(parts.optimizer, parts.scheduler, parts.scaler, counters)
        save_checkpoint(run.last, parts.model, self.labels, self.feature_config, **card, train_state=state)

    def _summary(self, epochs_done: int, parts: Parts) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "epochs_done": epochs_done, "data": self.data_summary,
                "device": str(self.device),
                "amp": str(parts.amp_dtype).replace("torch.", "") if parts.amp_dtype else None,
                "world_size": self.world.size, "micro_batch": parts.micro_batch}
