"""Where a clip of any length sits in the model's window: the way the training clips were made.

Training clips (`prepare-fsdd`, the demo corpus) are a trimmed word centred in 1 s, or a longer
recording's loudest second. `place_clip` does the same to a user's clip: its quiet edges are trimmed
(10 ms frames more than `TRIM_DB` below the loudest frame), the rest is centred in the window, and
what is still longer than the window keeps its loudest window. 'pad' is the reference's placement
(zero-pad at the end, cut after the window): 'auto' uses it for checkpoints imported from the
reference (trained on 1 s Speech Commands clips) and 'centre' for everything kwsdeploy trained.
"""

from __future__ import annotations

import numpy as np

from kwsdeploy.audio import fit_clip
from kwsdeploy.contract import CLIP_SAMPLES

TRIM_DB = 40.0  # frames this far below the loudest 10 ms frame are silence at the edges
TRIM_FRAME = 160  # samples per trimming frame (10 ms at 16 kHz)
PLACEMENTS = ("auto", "centre", "pad")


def centre_clip(x: np.ndarray, samples: int = CLIP_SAMPLES) -> np.ndarray:
    """Place a trimmed word in the middle of `samples` zeros; a longer clip keeps its loudest window."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= samples:
        out = np.zeros(samples, dtype=np.float32)
        start = (samples - len(x)) // 2
        out[start: start + len(x)] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, len(x) - samples + 1, 160)
    best = int(starts[np.argmax(energy[starts + samples] - energy[starts])])
    return x[best: best + samples].copy()


def trim_edges(x: np.ndarray, top_db: float = TRIM_DB, frame: int = TRIM_FRAME) -> np.ndarray:
    """`x` without its leading and trailing frames quieter than the loudest frame minus `top_db`."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x) // frame
    if n == 0:
        return x.copy()
    power = np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)
    if len(x) > n * frame:
        power = np.append(power, np.mean(x[n * frame:].astype(np.float64) ** 2))
    peak = float(power.max())
    if peak <= 0.0:
        return x[:0].copy()
    loud = np.flatnonzero(power >= peak * 10.0 ** (-top_db / 10.0))
    return x[int(loud[0]) * frame: min(len(x), (int(loud[-1]) + 1) * frame)].copy()


def place_clip(x: np.ndarray, samples: int = CLIP_SAMPLES, top_db: float = TRIM_DB) -> np.ndarray:
    """The clip as the model saw its training data: trimmed word centred; a long clip's loudest window."""
    return centre_clip(trim_edges(x, top_db), samples)


def resolve_placement(placement: str, card: dict) -> str:
    """'auto' -> 'pad' for a checkpoint imported from the reference, else 'centre'; others unchanged."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}: choose one of {', '.join(PLACEMENTS)}.")
    if placement != "auto":
        return placement
    return "pad" if card.get("imported_from") == "reference" else "centre"


def placed(x: np.ndarray, samples: int, placement: str) -> np.ndarray:
    """`place_clip` ('centre') or `fit_clip` ('pad'); another name is a ValueError."""
    if placement == "centre":
        return place_clip(x, samples)
    if placement == "pad":
        return fit_clip(x, samples)
    raise ValueError(f"unknown placement {placement!r}: choose one of {', '.join(PLACEMENTS)}.")


def placement_note(lengths: list[int], samples: int, placement: str, rate: int) -> str:
    """One line saying what was done to clips of these lengths."""
    longer = sum(n > samples for n in lengths)
    window = f"{samples / rate:g} s"
    what = (f"zero-padded at the end or cut to {window}" if placement == "pad" else
            f"placed as in training (quiet edges trimmed, the word centred in {window}, a longer word's loudest {window})")
    return f"{len(lengths)} clip(s) {what}; {longer} longer than {window}"
