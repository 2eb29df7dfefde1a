"""A run's randomness is a pure function of its seed (and epoch, rank): what --resume relies on."""

import random

import numpy as np
import torch

from kwsdeploy.train.seeding import (
    epoch_batches, seed_everything, seed_rank_dropout, spec_augment_generator, steps_per_epoch,
)  # fmt: skip


def test_epoch_batches_cover_the_set_and_drop_a_lone_last_clip():
    b = epoch_batches(9, 4, seed=3, epoch=0)
    assert [len(x) for x in b] == [4, 4]  # the 9th clip alone would be a batch of one
    assert len(set(sum(b, []))) == 8 and set(sum(b, [])) <= set(range(9))
    assert [len(x) for x in epoch_batches(10, 4, 3, 0)] == [4, 4, 2]
    assert sorted(sum(epoch_batches(10, 4, 3, 0), [])) == list(range(10))
    assert epoch_batches(1, 4, 0, 0) == [[0]]  # a single batch is kept whatever its size
    assert (steps_per_epoch(9, 4, 3), steps_per_epoch(10, 4, 3), steps_per_epoch(128, 128, 0)) == (2, 3, 1)


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_batches(50, 8, 1, 2) == epoch_batches(50, 8, 1, 2)
    assert epoch_batches(50, 8, 1, 2) != epoch_batches(50, 8, 1, 3)
    assert epoch_batches(50, 8, 1, 2) != epoch_batches(50, 8, 2, 2)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    epoch_batches(50, 8, 1, 2)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is not touched


def test_spec_augment_generator_is_per_seed_and_epoch():
    a, b, c = (torch.rand(4, generator=spec_augment_generator(s, e)) for s, e in [(5, 1), (5, 1), (5, 2)])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_only_the_other_ranks_reseed_their_dropout():
    torch.manual_seed(11)
    before = torch.get_rng_state()
    seed_rank_dropout(7, rank=0, epoch=3)
    assert torch.equal(torch.get_rng_state(), before)
    draws = []
    for rank, epoch in [(1, 3), (1, 3), (2, 3), (1, 4)]:
        seed_rank_dropout(7, rank, epoch)
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], draws[3])


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(2**32 + 5)  # NumPy takes the seed modulo 2**32
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(2**32 + 5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    np.random.seed(5)
    assert np.random.rand() == a[1]
