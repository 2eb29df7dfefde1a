"""`train()`: one training run on a prepared directory (labels.json + train/valid/test lists), then
`best` evaluated on the test split (test_metrics.json, test_confusion.png, test metrics in its card).

Run directory: config.json, metrics.jsonl, best/ and last/ (checkpoints; last/ also holds the
training state), test_metrics.json, and curves.png + test_confusion.png when matplotlib is importable.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from kwsdeploy.atomic import write_file
from kwsdeploy.train.build import resolve_device
from kwsdeploy.train.checkpoint import load_checkpoint, save_checkpoint
from kwsdeploy.train.data_summary import data_summary
from kwsdeploy.train.distributed import World, init_world
from kwsdeploy.train.evaluate import evaluate_dataset, plot_confusion
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.trainer import Trainer, TrainResult


def train(cfg: TrainConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, stop_after: int | None = None, log: Callable[[str], None] | None = None,
          test: bool = True) -> TrainResult:
    """Train on a prepared directory (labels.json + train/valid/test lists); evaluate `best` on test."""
    from kwsdeploy.data.dataset import KwsDataset, load_labels

    out = Path(out_dir)
    if resume:
        cfg = resumed_config(out, cfg)
    world = init_world(resolve_device(cfg.device))
    labels = load_labels(data_dir)
    with world.main_first():  # rank 0 decodes (and writes the disk caches); the others then map them
        train_set = KwsDataset(data_dir, "train", augment=cfg.augment, seed=cfg.seed, gain_db=cfg.gain_db,
                               noise_snr_db=cfg.noise_snr_db, speaker=cfg.speaker_augment())
        valid_set = _optional_split(KwsDataset, data_dir, "valid")
        test_set = _optional_split(KwsDataset, data_dir, "test") if test else None
    summary = data_summary(data_dir, labels, len(train_set), len(valid_set) if valid_set is not None else 0)
    trainer = Trainer(cfg, train_set, valid_set, labels, out, data_summary=summary, progress=progress, log=log,
                      world=world)
    result = trainer.fit(resume=resume, stop_after=stop_after)
    if test_set is not None and len(test_set) and result.best_dir.exists():
        _test_best(result, test_set, labels, summary, cfg.eval_batch_size, str(trainer.device), world,
                   log if world.is_main else None)
    world.barrier()
    world.close()
    return result


def resumed_config(out: Path, cfg: TrainConfig) -> TrainConfig:
    """The saved config.json of run `out`, with how to run it (device, workers, AMP, threads, compile,
    micro-batch) taken from `cfg`: what to learn never changes on --resume."""
    saved = out / "config.json"
    if not saved.is_file():
        raise ValueError(f"{out} holds no run to resume (no config.json); start one without --resume.")
    keep = {"device": cfg.device, "num_workers": cfg.num_workers, "amp": cfg.amp, "threads": cfg.threads,
            "compile": cfg.compile}  # how to run, not what to learn
    saved_cfg = TrainConfig.from_dict(json.loads(saved.read_text())).with_overrides(**keep)
    return dataclasses.replace(saved_cfg, micro_batch=cfg.micro_batch)  # None: the default for this world


def _test_best(result: TrainResult, test_set, labels, summary: dict, batch_size: int, device: str, world: World,
               log: Callable[[str], None] | None) -> None:
    """Evaluate best/ on the test split (every rank); rank 0 writes test_metrics.json, the confusion
    plot, and the test metrics into best/'s card."""
    best = load_checkpoint(result.best_dir)
    tm = evaluate_dataset(best.model, best.feature_config, test_set, labels, batch_size, device, world=world)
    if not world.is_main:
        return
    write_file(result.out_dir / "test_metrics.json", json.dumps(tm, indent=1) + "\n")
    plot_confusion(tm, result.out_dir / "test_confusion.png")  # only when matplotlib is importable
    metrics = dict(best.card.get("metrics", {}), test_acc=tm["accuracy"], test_macro_f1=tm["macro_f1"])
    training = dict(best.card.get("training", {}), data=dict(summary, test_clips=len(test_set)))
    save_checkpoint(result.best_dir, best.model, labels, best.feature_config,
                    model_config=best.card.get("model_config"), training=training, metrics=metrics)
    log and log(f"best (epoch {result.best_epoch}) on test: accuracy {tm['accuracy']:.2%}, "
                f"macro F1 {tm['macro_f1']:.4f}")


def _optional_split(cls, data_dir, split):
    """The split's dataset, or None when the prepared directory has no such split."""
    if not (Path(data_dir) / f"{split}.jsonl").is_file():
        return None
    return cls(data_dir, split)
