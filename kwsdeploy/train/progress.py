"""What a training run shows while it runs: a rich progress bar per epoch (stderr) and one log line
per finished epoch."""

from __future__ import annotations

from typing import Any


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The log line of a finished epoch's metrics row."""
    s = (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, train acc {row['train_acc']:.2%}, "
         f"{row['clips_per_s']:.0f} clips/s, {row['epoch_time_s']:.1f} s")
    if "valid_acc" in row:
        s += f"; valid acc {row['valid_acc']:.2%}, macro F1 {row['valid_macro_f1']:.4f}"
    return s


class EpochBar:
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
