"""Keyword Mamba (Xiao et al. 2024): KWM / KWMT as in the reference, and our causal KWM.

Reference (TorchKWS networks/kwm/kwm.py, kwmt.py, GPU fast path): one token per frame
(Linear n_mfcc -> D), a class token inserted in the MIDDLE (index 49 of 99), absolute positions,
Vim-style blocks `residual += drop_path(h); h = Mixer(RMSNorm(residual))` with the residual in
fp32, a bidirectional Mamba mixer, final RMSNorm and a classifier on the class token. KWMT adds
`residual += drop_path(h); h = FFN(RMSNorm2(residual))` (D -> 2D -> D, GELU) to each block.

Causal KWM (ours): the same blocks with a unidirectional mixer, no class token, no absolute
positions (an absolute pos_embed cannot stream past 98 frames; the causal conv and the SSM state
carry position), and the classifier at the current step: by default on the mean of the per-frame
outputs over the last second (`readout="mean"`, streamed with a sliding window of per-frame
logits), or on the last frame alone (`readout="last"`). It streams step by step.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models._mamba_mixer import MambaMixer
from kwsdeploy.models.reference_weights import ReferenceWeightsError, register_reference_map, rename_keys
from kwsdeploy.models.registry import ModelCard, register, display_name

FRAMES = CLIP_FRAMES  # tokens per 1 s clip


class RMSNorm(nn.Module):
    """RMSNorm with weight only, computed in fp32 (the reference's triton kernel math)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight.float()
        return out.to(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's branch with probability p in training, rescale by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class FeedForward(nn.Module):
    """KWMT's per-token FFN: Linear(D, 2D) -> GELU -> Linear(2D, D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MambaBlock(nn.Module):
    """Add -> RMSNorm -> Mixer (and for KWMT: Add -> RMSNorm -> FFN); returns (hidden, residual)."""

    def __init__(self, dim: int, mixer: MambaMixer, drop_path: float, ffn: bool, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path)
        self.norm2 = RMSNorm(dim, eps) if ffn else None
        self.ffn = FeedForward(dim, 2 * dim) if ffn else None

    def pre_mix(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused add + norm: the first block takes its input as the residual."""
        residual = hidden.float() if residual is None else residual + self.drop_path(hidden)
        return self.norm(residual).to(hidden.dtype), residual

    def post_mix(self, mixed: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """KWMT's second half (per token, so it streams as it is); identity for KWM."""
        if self.ffn is None:
            return mixed, residual
        residual = residual + self.drop_path(mixed)
        return self.ffn(self.norm2(residual).to(mixed.dtype)), residual

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h, residual = self.pre_mix(hidden, residual)
        return self.post_mix(self.mixer(h), residual)


class KeywordMamba(nn.Module):
    """[B, 1, n_mfcc, 98] -> [B, num_classes]. `causal=False`: the reference KWM/KWMT;
    `causal=True`: unidirectional, no class token or positions; `readout` "mean" (the per-frame
    logits averaged over the frames, i.e. the last second when streaming) or "last" (last frame)."""

    def __init__(
        self,
        num_classes: int = 12,
        n_mfcc: int = 40,
        embed_dim: int = 192,
        depth: int = 12,
        ffn: bool = False,
        causal: bool = False,
        frames: int = FRAMES,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
        norm_eps: float = 1e-5,
        readout: str = "last",
    ) -> None:
        super().__init__()
        if readout not in ("last", "mean"):
            raise ValueError(f"readout must be 'last' or 'mean', got {readout!r}.")
        if readout == "mean" and not causal:
            raise ValueError("readout='mean' is for the causal Keyword Mamba; the reference reads its class token.")
        self.causal = causal
        self.readout = readout
        self.frames = frames
        self.embed_dim = embed_dim
        self.cls_position = frames // 2
        self.patch_embed = nn.Linear(n_mfcc, embed_dim)
        if not causal:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, frames + 1, embed_dim))
            self.pos_drop = nn.Dropout(drop_rate)
        # Stochastic depth as in the reference: block i adds drop_path([0] + linspace(0, r, depth))[i]
        # to its incoming branch; the final add uses r.
        rates = [0.0] + torch.linspace(0, drop_path_rate, depth).tolist()
        self.layers = nn.ModuleList(
            MambaBlock(
                embed_dim,
                MambaMixer(embed_dim, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=not causal),
                drop_path=rates[i],
                ffn=ffn,
                eps=norm_eps,
            )
            for i in range(depth)
        )
        self.drop_path = DropPath(drop_path_rate)
        self.norm_f = RMSNorm(embed_dim, norm_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """The reference's init: trunc-normal(0.02) embeddings and head, every Linear bias zero except
        the forward dt_proj's, out_proj re-drawn (kaiming-uniform) and scaled by 1/sqrt(depth)."""
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        if not self.causal:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        protected = {id(layer.mixer.dt_proj.bias) for layer in self.layers}
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None and id(module.bias) not in protected:
                nn.init.zeros_(module.bias)
        for layer in self.layers:
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(depth)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mfcc, T] -> embedded tokens [B, T(+1), D] (class token and positions if any)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"Keyword Mamba expects features [B, 1, n_mfcc, frames], got shape {tuple(x.shape)}.")
        if x.shape[2] != self.patch_embed.in_features:
            raise ValueError(
                f"This model takes {self.patch_embed.in_features} MFCC coefficients, got {x.shape[2]}; "
                "use the feature config in its card."
            )
        if not self.causal and x.shape[-1] != self.frames:
            raise ValueError(
                f"The bidirectional Keyword Mamba takes exactly {self.frames} frames (1 s), got {x.shape[-1]}; "
                "pad or cut the clip to 1 s."
            )
        h = self.patch_embed(x[:, 0].transpose(1, 2))
        if not self.causal:
            cls = self.cls_token.expand(h.shape[0], -1, -1)
            p = self.cls_position
            h = torch.cat([h[:, :p], cls, h[:, p:]], dim=1) + self.pos_embed
            h = self.pos_drop(h)
        return h

    def final_norm(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The final add + norm: norm_f(residual + hidden), in the hidden states' dtype."""
        return self.norm_f(residual + self.drop_path(hidden)).to(hidden.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised hidden states of every token [B, T(+1), D]."""
        hidden, residual = self.tokens(x), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        return self.final_norm(hidden, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x)
        if not self.causal:
            return self.head(h[:, self.cls_position])
        # head is linear: head(mean of h) == mean of the per-frame logits, which a stream keeps in a window
        return self.head(h.mean(dim=1) if self.readout == "mean" else h[:, -1])

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Causal model only: the per-frame logits [B, T, num_classes] (before any window mean): what a
        `readout="last"` stream emits after every frame."""
        if not self.causal:
            raise RuntimeError("forward_sequence() is defined for the causal Keyword Mamba only.")
        return self.head(self.forward_features(x))

    def forward_window(self, x: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """Causal model with readout "mean": the logits a stream gives after all of `x` (the mean of
        the last `clip_frames` per-frame logits)."""
        if not self.causal or self.readout != "mean":
            raise RuntimeError("forward_window() is defined for the causal Keyword Mamba with readout='mean' only.")
        return self.forward_sequence(x)[:, -int(clip_frames):].mean(1)

    def extra_macs(self, frames: int = FRAMES) -> int:
        """MACs per clip of `frames` frames that Linear hooks miss (depthwise convs, ~3 per scan element)."""
        tokens = frames + (0 if self.causal else 1)
        return sum(layer.mixer.extra_macs(tokens) for layer in self.layers)


# --- reference state dict (TorchKWS networks/kwm/kwm.py, kwmt.py) -> ours ------------------------

_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^to_patch_embedding\.1\.", "patch_embed."),
    (r"^layers\.(\d+)\.fn\.net\.0\.", r"layers.\1.ffn.fc1."),
    (r"^layers\.(\d+)\.fn\.net\.3\.", r"layers.\1.ffn.fc2."),
)


def _map_reference_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the reference's keys; every other key (cls_token, pos_embed, layers.i.mixer.*,
    layers.i.norm(2).weight, norm_f, head) is already ours and unknown keys pass through to be reported."""
    if getattr(model, "causal", False):
        raise ReferenceWeightsError(
            f"{display_name(model)} is our causal Keyword Mamba; the reference has no "
            "causal model. Import reference weights into kwm-<D>-12 or kwmt-<D>-12 instead."
        )
    return rename_keys(state, _KEY_RULES)


register_reference_map("kwm", _map_reference_keys)


def _build(num_classes: int = 12, n_mfcc: int = 40, **config) -> KeywordMamba:
    return KeywordMamba(num_classes=num_classes, n_mfcc=n_mfcc, **config)


_REFERENCE = "Xiao et al. 2024, Keyword Mamba; dhyzy123/KWM TorchKWS networks/kwm/kwm.py (GPU fast path)"
_BIDIR_NOTES = (
    "Bidirectional mixer and a middle class token: every output depends on the whole 98-frame window, "
    "so it streams in 'windowed' mode. Follows the reference's GPU fast path (SiLU(z) gate in each "
    "branch; the reference's CPU slow path forgets it). The backward dt_proj_b.bias starts at zero "
    "as in the reference's init."
)
_CAUSAL_NOTES = (
    "Ours: unidirectional Mamba mixer, no class token and no absolute pos_embed (it could not stream "
    "past 98 frames; the causal conv and the SSM state carry position); at every step the classifier reads "
    "the mean of the per-frame outputs over the last second (readout='mean'; a last-frame readout, "
    "readout='last', barely trains on centred 1 s clips, whose word ends ~0.3 s before the last frame). "
    "Streams exactly: one step per 10 ms frame (state per layer: conv [3, 2D], ssm [16, 2D], plus a "
    "window of the last 97 per-frame logits), or "
    "packet_frames=N (N frames per call; chunk_frames is an alias). Reset policy: the state is reset to zero at the start "
    "of a stream only; it is a fading memory (|exp(dt*A)| < 1 per frame) and stays bounded on long "
    "streams (tested on 60,000 frames), so no periodic reset is needed; a runtime may also reset "
    "after a detection."
)

_BIDIR = (
    # name, embed_dim, ffn, params, macs (FACTS.md)
    ("kwm-64-12", 64, False, 499_084, 57_500_000),
    ("kwm-128-12", 128, False, 1_637_132, 178_200_000),
    ("kwm-192-12", 192, False, 3_414_156, 362_200_000),
    ("kwmt-64-12", 64, True, 698_764, 76_900_000),
    ("kwmt-128-12", 128, True, 2_429_708, 256_000_000),
    ("kwmt-192-12", 192, True, 5_192_844, 537_400_000),
)
for _name, _dim, _ffn, _params, _macs in _BIDIR:
    register(
        ModelCard(
            name=_name,
            family="kwm",
            builder=_build,
            config=dict(embed_dim=_dim, depth=12, ffn=_ffn, causal=False),
            n_mfcc=40,
            expected_params=_params,
            expected_macs=_macs,
            streaming="windowed",
            reference=_REFERENCE + (" + kwmt.py" if _ffn else ""),
            description=f"Keyword Mamba{' + FFN (KWMT)' if _ffn else ''}, D={_dim}, depth 12, bidirectional, middle class token",
            notes=_BIDIR_NOTES + (" The reference's select_model() branch for KWMT is commented out (broken)." if _ffn else ""),
            reference_name=None if _ffn else _name,
        )
    )

_CAUSAL = (
    # name, embed_dim, depth, params (measured), macs (98 frames: hooks on Linear + extra_macs), aliases
    ("kwm-causal-192-12", 192, 12, 3_030_924, 309_638_400, ()),
    ("kwm-causal-64-4", 64, 4, 134_284, 14_501_632, ("kwm",)),
)
for _name, _dim, _depth, _params, _macs, _aliases in _CAUSAL:
    register(
        ModelCard(
            name=_name,
            family="kwm",
            builder=_build,
            config=dict(embed_dim=_dim, depth=_depth, ffn=False, causal=True, readout="mean"),
            n_mfcc=40,
            expected_params=_params,
            expected_macs=_macs,
            streaming="exact",
            reference="kwsdeploy (causal variant of Keyword Mamba)",
            description=f"Causal Keyword Mamba, D={_dim}, depth {_depth}, unidirectional, classifier on the last second's mean",
            notes=_CAUSAL_NOTES,
            aliases=_aliases,
        )
    )
