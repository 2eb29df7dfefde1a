"""Training throughput: clips per second (whole run and per rank), time per epoch, and the share of
the time a rank waited for its data loader, reduced over ranks once per epoch."""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

# The fields of a metrics.jsonl row that are timings (they differ between otherwise equal runs).
TIMING_KEYS = ("epoch_time_s", "clips_per_s", "clips_per_s_per_rank", "data_wait_share")


class WaitTimer:
    """An iterator that adds up the seconds spent waiting for the next item (the data-wait time)."""

    def __init__(self, it: Iterator) -> None:
        self._it, self.waited = it, 0.0

    def __iter__(self) -> "WaitTimer":
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.waited += time.perf_counter() - t


def epoch_throughput(world, seen: int, correct: int, loss_sum: float, seconds: float,
                     waited: float) -> dict[str, Any]:
    """One epoch's training metrics over all ranks (every rank gets the same row)."""
    ranks = world.gather((seen, correct, loss_sum, seconds, waited))
    total = sum(r[0] for r in ranks)
    dt = max(r[3] for r in ranks)
    return {
        "train_loss": sum(r[2] for r in ranks) / max(total, 1),
        "train_acc": sum(r[1] for r in ranks) / max(total, 1),
        "epoch_time_s": dt,
        "clips_per_s": total / max(dt, 1e-9),
        "clips_per_s_per_rank": [r[0] / max(r[3], 1e-9) for r in ranks],
        "data_wait_share": sum(r[4] / max(r[3], 1e-9) for r in ranks) / len(ranks),
        "world_size": len(ranks),
    }


def throughput_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean throughput over epoch rows (those of this call), or None when there are none."""
    rows = [r for r in rows if "clips_per_s_per_rank" in r]
    if not rows:
        return None
    n = len(rows)
    per_rank = [sum(v) / len(v) for v in (r["clips_per_s_per_rank"] for r in rows)]
    return {
        "epochs": n,
        "world_size": rows[-1]["world_size"],
        "clips_per_s": sum(r["clips_per_s"] for r in rows) / n,
        "clips_per_s_per_rank": sum(per_rank) / n,
        "epoch_time_s": sum(r["epoch_time_s"] for r in rows) / n,
        "data_wait_share": sum(r["data_wait_share"] for r in rows) / n,
    }


def throughput_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """The end-of-run line: clips/s over all ranks and per rank, s/epoch, data-wait share."""
    s = throughput_summary(rows)
    if s is None:
        return None
    return (f"throughput over {s['epochs']} epoch(s), {s['world_size']} rank(s): {s['clips_per_s']:.0f} clips/s "
            f"({s['clips_per_s_per_rank']:.0f} per rank), {s['epoch_time_s']:.2f} s/epoch, "
            f"data wait {s['data_wait_share']:.1%}")
