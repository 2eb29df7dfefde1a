"""Which epoch is the best: the first one with the highest validation accuracy (training accuracy
when there is no validation split); its counters travel in the training state for `--resume`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def epoch_score(row: dict[str, Any]) -> float:
    """What an epoch's metrics row is judged by: valid_acc, else train_acc."""
    return row.get("valid_acc", row["train_acc"])


@dataclass
class Best:
    """The best score so far and the (1-based) epoch that reached it."""

    acc: float | None = None
    epoch: int | None = None

    def offer(self, score: float, epoch: int) -> bool:
        """Take `score` of `epoch` when it beats the best (a tie keeps the earlier epoch); whether it did."""
        if self.acc is not None and not score > self.acc:
            return False
        self.acc, self.epoch = score, epoch
        return True

    def counters(self, next_epoch: int) -> dict[str, Any]:
        """The counters saved with last/ (what `--resume` continues from)."""
        return {"next_epoch": next_epoch, "best_acc": self.acc, "best_epoch": self.epoch}

    @classmethod
    def from_counters(cls, counters: dict[str, Any]) -> "Best":
        return cls(counters["best_acc"], counters["best_epoch"])
