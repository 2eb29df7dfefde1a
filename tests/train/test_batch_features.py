"""SpecAugment of a training batch is drawn once per global batch: every micro-batch takes its rows
of the same masks, so the masks do not depend on how the batch is split over passes or ranks."""

import torch

from kwsdeploy.data.augment import spec_augment_keep
from kwsdeploy.train.batch_features import BatchFeatures
from kwsdeploy.train.distributed import plan_epoch

F, T = 40, 30


def _frames(wave):  # a stand-in frontend: [B, F*T] -> [B, F, T]
    return wave.view(wave.shape[0], F, T)


def _waves(n):
    return 1.0 + torch.arange(n * F * T, dtype=torch.float32).view(n, F * T)


def test_micro_batches_take_their_rows_of_one_global_draw():
    (step,) = plan_epoch([[0, 1, 2, 3, 4, 5]], rank=0, world_size=1, micro_batch=2)
    assert [mb.positions for mb in step.micro] == [[0, 1], [2, 3], [4, 5]]
    features = BatchFeatures(_frames, 0, True, torch.Generator().manual_seed(9))
    wave = _waves(6)
    parts = [features(wave[mb.positions], step, mb) for mb in step.micro]
    keep = spec_augment_keep(6, F, T, torch.Generator().manual_seed(9))
    assert torch.equal(torch.cat(parts), _frames(wave).masked_fill(~keep, 0.0))
    assert 0 < int((~keep).sum()) < keep.numel()  # some of it masked, not all
    whole = BatchFeatures(_frames, 0, True, torch.Generator().manual_seed(9))
    (one,) = plan_epoch([[0, 1, 2, 3, 4, 5]], 0, 1, 6)
    assert torch.equal(whole(wave, one, one.micro[0]), torch.cat(parts))  # one pass: the same features


def test_each_step_draws_new_masks_and_no_spec_augment_keeps_all():
    steps = plan_epoch([[0, 1, 2, 3], [4, 5, 6, 7]], 0, 1, 4)
    features = BatchFeatures(_frames, 0, True, torch.Generator().manual_seed(1))
    wave = _waves(4)
    a, b = (features(wave, s, s.micro[0]) for s in steps)
    assert not torch.equal(a == 0, b == 0)
    plain = BatchFeatures(_frames, 0, False, torch.Generator().manual_seed(1))
    assert torch.equal(plain(wave, steps[0], steps[0].micro[0]), _frames(wave))


def test_context_comes_before_the_frontend():
    seen = []
    features = BatchFeatures(lambda w: seen.append(w.shape) or w, 3, False, torch.Generator())
    (step,) = plan_epoch([[0, 1]], 0, 1, 2)
    out = features(torch.zeros(2, 10), step, step.micro[0])
    assert seen == [torch.Size([2, 13])] and out.shape == (2, 13) and not out.requires_grad
