"""A training run's directory: config.json (what makes it a run), metrics.jsonl (one row per epoch),
best/ and last/ checkpoints; a new run refuses a directory that holds another run or other files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from kwsdeploy.atomic import ArtifactKind, write_file
from kwsdeploy.train.presets import TrainConfig

RUN = ArtifactKind("training run", "config.json", lambda d: isinstance(d, dict) and {"model", "epochs", "lr"} <= set(d))


class RunDir:
    """The paths of run directory `out`."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.best, self.last, self.metrics = self.out / "best", self.out / "last", self.out / "metrics.jsonl"

    def start(self, cfg: TrainConfig) -> None:
        """A new run: refuse a directory that holds one, then write config.json."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        if self.last.exists() or read_jsonl(self.metrics):
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
        if any(out.iterdir()) and not RUN.holds(out):
            raise ValueError(f"--out {out} is a non-empty directory that is not a kwsdeploy run (no config.json "
                             "written by 'kwsdeploy train'): choose a new or empty --out.")
        write_file(out / "config.json", json.dumps(cfg.to_dict(), indent=1) + "\n")

    def has_finished_epoch(self) -> bool:
        """Whether last/ holds a checkpoint (a run killed in its first epoch has none)."""
        return (self.last / "card.json").is_file()

    def history(self, upto_epoch: int) -> list[dict[str, Any]]:
        """The metrics rows of epochs 1..`upto_epoch` (rows of epochs after last/ was saved are dropped)."""
        return [r for r in read_jsonl(self.metrics) if r["epoch"] <= upto_epoch]

    def write_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """metrics.jsonl, rewritten whole (atomically)."""
        write_file(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; [] when there is no file."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
