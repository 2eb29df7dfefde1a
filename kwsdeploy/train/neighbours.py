"""`--neighbour-p`: another word inside a training clip's window, as a stream's window holds one.

Streaming, the detector reads a second-long window that often holds more than the keyword: the end of
the word or sentence before it (digits said 0.5 s apart, a keyword right after other speech), or the
start of the next one. Trained only on lone centred words, the model calls such windows `_unknown_`
(benchmarks/results/detection/score-study.md: the rival of most missed keywords). With probability P a
training clip gets another clip of its micro-batch mixed in at that clip's own level, shifted by
U(lo, hi) seconds so only its end lands in the window's start (or only its start in the window's end);
the label stays the clip's own. Draws come from a generator of (seed, epoch): a run repeats them."""

from __future__ import annotations

import torch

NEIGHBOUR_SHIFT_S = (0.3, 0.8)  # how far the other clip moves out of the window (its word is centred)


def neighbour_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's neighbour draws."""
    return torch.Generator().manual_seed(seed * 9_000_011 + epoch + 17)


def add_neighbours(wave: torch.Tensor, p: float, generator: torch.Generator, sample_rate: int,
                   shift_s: tuple[float, float] = NEIGHBOUR_SHIFT_S) -> torch.Tensor:
    """[B, T] -> [B, T]: each clip, with probability `p`, plus the previous clip of the batch shifted
    out of the window by U(shift_s) seconds, before it (its end at the window's start) or after it
    (its start at the window's end), half and half. Unchanged when `p` is 0 or the batch has one clip."""
    b, t = wave.shape
    if p <= 0.0 or b < 2:
        return wave
    picked = torch.rand(b, generator=generator) < p
    before = torch.rand(b, generator=generator) < 0.5
    lo, hi = shift_s
    shifts = ((lo + (hi - lo) * torch.rand(b, generator=generator)) * sample_rate).long().clamp(1, t - 1)
    other = torch.roll(wave, 1, dims=0)
    out = wave.clone()
    for i in torch.nonzero(picked).flatten().tolist():
        s = int(shifts[i])
        if before[i]:
            out[i, : t - s] += other[i, s:]
        else:
            out[i, s:] += other[i, : t - s]
    return out
