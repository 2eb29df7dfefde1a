"""A run's randomness as pure functions of its seed: the start of the run, then per epoch the batch
order, the SpecAugment draws and the other ranks' dropout, so `--resume` repeats them exactly."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (before the model is created)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled index batches of one epoch, a pure function of (seed, epoch); a lone last clip is
    dropped (BatchNorm cannot train on a batch of one)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def steps_per_epoch(n: int, batch_size: int, seed: int) -> int:
    """Optimizer steps in every epoch (the same for all: only the order changes)."""
    return len(epoch_batches(n, batch_size, seed, 0))


def spec_augment_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's SpecAugment masks (the same on every rank)."""
    return torch.Generator().manual_seed(seed * 7_000_003 + epoch)


def seed_rank_dropout(seed: int, rank: int, epoch: int) -> None:
    """Seed the global generator of rank > 0 (its dropout draws) from (seed, rank, epoch); rank 0 keeps
    the run's own stream, so a world of one trains as a plain process does."""
    if rank:
        torch.manual_seed(seed * 1_000_003 + rank * 7_919 + epoch)
