"""MAC counting: hand-computed tiny nets, an independent FLOP counter, and FACTS.md's zoo figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kwsdeploy.models import create, list_cards
from kwsdeploy.models.macs import forward_macs, macs_per_clip

FACTS_MACS_REL_TOL = 0.05  # FACTS.md gives MACs to 3-4 significant figures


class _TinyConvNet(nn.Module):
    """[1, 1, 4, 10]: conv2d, then the 4 rows as channels through conv1d, depthwise conv1d, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c2 = nn.Conv2d(1, 2, (3, 3), stride=2)  # [1,1,4,10] -> [1,2,1,4]: 8 outputs x 9
        self.c1 = nn.Conv1d(4, 8, 3, padding=1)  # [1,4,10] -> [1,8,10]: 80 outputs x 12
        self.dw = nn.Conv1d(8, 8, 3, groups=8)  # -> [1,8,8]: 64 outputs x 3
        self.fc = nn.Linear(8, 5)  # [1,8,8] as 8 rows of 8 -> 8 x 5 outputs x 8
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.c2(x)
        b = self.dw(self.act(self.bn(self.c1(x[:, 0]))))
        return self.fc(b).sum() + a.sum()


def test_tiny_convnet_counts_by_hand():
    assert macs_per_clip(_TinyConvNet(), n_mfcc=4, frames=10) == 8 * 9 + 80 * 12 + 64 * 3 + 40 * 8


def test_batch_multiplies_the_count():
    net = _TinyConvNet()
    assert forward_macs(net, torch.zeros(3, 1, 4, 10), frames=10) == 3 * macs_per_clip(net, 4, 10)


def test_multihead_attention_counts_projections_and_both_matmuls():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 4, 8)
    # q, k, v and out projections: 4 x 4 tokens x 8 x 8; QK^T and AV: 2 x 4 x 4 x 8
    assert forward_macs(mha, x, x, x, frames=4) == 4 * 4 * 64 + 2 * 4 * 4 * 8
    with FlopCounterMode(display=False) as flops:
        mha(x, x, x)
    assert flops.get_total_flops() == 2 * forward_macs(mha, x, x, x, frames=4)


class _WithExtras(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, 0].transpose(1, 2))

    def extra_macs(self, frames: int) -> int:
        return 7 * frames


def test_model_extra_macs_are_added_per_forward():
    # Linear over 5 frames: 5 x 2 x 3 = 30; extras 7 x 5 = 35.
    assert macs_per_clip(_WithExtras(), n_mfcc=3, frames=5) == 30 + 35


def test_counting_leaves_no_hooks_and_keeps_training_mode():
    net = _TinyConvNet().train()
    macs_per_clip(net, 4, 10)
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_kwt1_counts_match_the_formula_and_an_independent_flop_counter():
    model = create("kwt-1")
    tokens, dim, layers = 99, 64, 12
    per_layer = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * 256
    expected = 98 * 40 * dim + layers * per_layer + dim * 12
    assert macs_per_clip(model, 40) == expected == 68_832_512
    model.eval()
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(torch.zeros(1, 1, 40, 98))
    assert flops.get_total_flops() == 2 * expected


class _Functional(nn.Module):
    """Folded-weight step layers call F.conv1d / F.linear / einsum on buffers: no module hook sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.ones(6, 4, 3))
        self.register_buffer("fc", torch.ones(2, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.conv1d(x[:, 0], self.w)  # [1, 6, 8]: 48 outputs x 12
        gram = torch.einsum("bct,bdt->bcd", h, h)  # 36 outputs x 8 summed
        outer = torch.einsum("bc,d->bcd", h[..., 0], h[0, 0])  # elementwise: not a MAC
        return torch.nn.functional.linear(h.transpose(1, 2), self.fc) @ gram[:, :2, :2] + outer.sum()


def test_functional_ops_outside_modules_are_counted_at_operator_level():
    # conv 48 x 12, gram 36 x 8, linear [1, 8, 2] x 6, matmul [1, 8, 2] x 2
    assert macs_per_clip(_Functional(), n_mfcc=4, frames=10) == 48 * 12 + 36 * 8 + 16 * 6 + 16 * 2


def test_extra_macs_replaces_the_operator_level_count():
    net = _Functional()
    net.extra_macs = lambda frames: 1000
    assert macs_per_clip(net, n_mfcc=4, frames=10) == 1000


_CARDS = list_cards()


@pytest.mark.parametrize("card", _CARDS, ids=[c.name for c in _CARDS])
def test_zoo_counts_agree_with_torch_flop_counter(card):
    model = card.build().eval()
    if hasattr(model, "extra_macs"):
        pytest.skip("declares extra_macs (e.g. a selective scan) that a FLOP counter does not see")
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(torch.zeros(1, 1, card.n_mfcc, 98))
    assert macs_per_clip(model, card.n_mfcc) * 2 == flops.get_total_flops()


_WITH_MACS = [c for c in list_cards() if c.expected_macs]


@pytest.mark.parametrize("card", _WITH_MACS, ids=[c.name for c in _WITH_MACS])
def test_zoo_macs_within_5_percent_of_facts(card):
    torch.manual_seed(0)
    measured = macs_per_clip(card.build(num_classes=12), card.n_mfcc)
    rel = abs(measured - card.expected_macs) / card.expected_macs
    assert rel <= FACTS_MACS_REL_TOL, f"{card.name}: measured {measured:,} vs FACTS {card.expected_macs:,}"
