"""Tiny step modules that follow the step contract, for exporter and runtime tests (fast, CPU)."""

from __future__ import annotations

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import StateSpec, StreamSpec
from kwsdeploy.models.registry import KwsInfo, ModelCard

N_MFCC = 40
CLASSES = 12


class TinyCausalStep(nn.Module):
    """Exact step: a causal conv over a ring buffer of past frames, then a running-mean pool."""

    def __init__(self, n_mfcc: int = N_MFCC, channels: int = 8, kernel: int = 3, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_mfcc, channels, kernel)
        self.head = nn.Linear(channels, classes)
        self.stream_spec = StreamSpec(
            "exact", 1, 0, 98, n_mfcc, classes,
            (StateSpec("state.conv.buffer", (n_mfcc, kernel - 1)), StateSpec("state.pool.sum", (channels,))),
            FeatureConfig.deployable(n_mfcc),
        )

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(batch, *s.shape) for s in self.stream_spec.states)

    def forward(self, x, buffer, pool_sum):
        full = torch.cat([buffer, x], -1)
        pool_sum = pool_sum + torch.relu(self.conv(full)).squeeze(-1)
        return self.head(pool_sum / 98.0), full[..., 1:], pool_sum


class TinyOffline(nn.Module):
    """Offline classifier [B, 1, n_mfcc, 98] -> [B, classes], carrying a (test) card as create() does."""

    def __init__(self, n_mfcc: int = N_MFCC, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, (n_mfcc, 5), stride=(1, 2))
        self.head = nn.Linear(4, classes)
        card = ModelCard("tiny-offline", "tiny", TinyOffline, n_mfcc=n_mfcc, streaming="windowed", reference="kwsdeploy tests")
        self.kws = KwsInfo(card, classes, n_mfcc)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyFrontend(nn.Module):
    """A streaming frontend with the StreamingMFCC contract: frames, new_cache = f(audio, cache)."""

    def __init__(self, n_mfcc: int = N_MFCC, win: int = 480, hop: int = 160) -> None:
        super().__init__()
        self.win, self.hop = win, hop
        self.cache_samples = win - hop
        self.proj = nn.Conv1d(1, n_mfcc, win, stride=hop, bias=False)

    def forward(self, audio, cache):
        buf = torch.cat([cache, audio], -1)
        frames = torch.log1p(self.proj(buf.unsqueeze(1)).square())
        return frames, buf[:, -self.cache_samples:]


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise a module's parameters from a fixed seed (deterministic tests)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def export_tiny(out, features, labels, source: str = "", **kwargs):
    """Export the seeded tiny step form (offline model: `TinyOffline`) to `out` with the legacy exporter,
    parity on `features`: (the step module, the bundle path). `kwargs` go to `export_bundle`."""
    from kwsdeploy.exporters.bundle import ParityData, export_bundle

    step = seeded(TinyCausalStep())
    res = export_bundle(out, model=seeded(TinyOffline()), smodel=step, labels=list(labels),
                        feature_config=step.stream_spec.feature_config, exporter="legacy",
                        parity=ParityData(features=features, source=source), **kwargs)
    return step, res.path
