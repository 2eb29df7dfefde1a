"""Keyword Transformer (KWT-1/2/3, Berg et al. 2021) as in the reference TorchKWS `networks/kwt.py`.

One token per MFCC frame (Linear n_mfcc -> dim), a learnable class token at index 0, learnable
absolute positions, post-norm blocks `x + LayerNorm(f(x))`, classifier LayerNorm + Linear on the
class token. With one head of width dim (KWT-1) the attention has no output projection.
Attention spans the whole clip, so KWT streams in `windowed` mode only.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from kwsdeploy.contract import CLIP_FRAMES
from kwsdeploy.models.reference_weights import register_reference_map, rename_keys
from kwsdeploy.models.registry import ModelCard, register

FRAMES = CLIP_FRAMES  # tokens per 1 s clip (plus the class token)


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit matmuls (exportable, countable by `count_macs`)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        # The reference drops the output projection when it would be a square map of one head.
        self.proj: nn.Module = nn.Identity() if (heads == 1 and dim_head == dim) else nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.proj(out)

    def count_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """MACs of the QK^T and attention-times-V matmuls (the Linear layers are hooked separately)."""
        b, n, _ = inputs[0].shape
        return 2 * b * self.heads * n * n * self.dim_head


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PostNormBlock(nn.Module):
    """x = x + LN(attn(x)); x = x + LN(ffn(x)) (the reference's `pre_norm=False`)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(self.attn(x))
        return x + self.norm2(self.mlp(x))


class KWT(nn.Module):
    """[B, 1, n_mfcc, T<=frames] -> [B, num_classes]; one token per frame, class token first."""

    def __init__(
        self,
        num_classes: int = 12,
        n_mfcc: int = 40,
        dim: int = 64,
        depth: int = 12,
        heads: int = 1,
        mlp_dim: int = 256,
        dim_head: int = 64,
        frames: int = FRAMES,
        dropout: float = 0.0,
        emb_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.frames = frames
        self.patch_embed = nn.Linear(n_mfcc, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, frames + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.emb_drop = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(PostNormBlock(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"KWT expects features [B, 1, n_mfcc, frames], got shape {tuple(x.shape)}.")
        t = x.shape[-1]
        if t > self.frames:
            raise ValueError(f"KWT was built for at most {self.frames} frames, got {t}; cut the input to 1 s.")
        tokens = self.patch_embed(x[:, 0].transpose(1, 2))  # [B, T, dim]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed[:, : t + 1]
        h = self.emb_drop(h)
        for block in self.blocks:
            h = block(h)
        return self.head(self.head_norm(h[:, 0]))


# --- reference state dict (TorchKWS networks/kwt.py) -> ours -------------------------------------

_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^to_patch_embedding\.1\.", "patch_embed."),
    (r"^pos_embedding$", "pos_embed"),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.net\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.net\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.layers\.(\d+)\.1\.norm\.", r"blocks.\1.norm2."),
    (r"^mlp_head\.0\.", "head_norm."),
    (r"^mlp_head\.1\.", "head."),
)


def _map_reference_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the reference's keys; a key no rule knows is passed through (and reported as unexpected)."""
    return rename_keys(state, _KEY_RULES)


register_reference_map("kwt", _map_reference_keys)


def _build(num_classes: int = 12, n_mfcc: int = 40, **config) -> KWT:
    return KWT(num_classes=num_classes, n_mfcc=n_mfcc, **config)


_NOTES = (
    "Streams in 'windowed' mode only: every token attends to every other token of the 98-frame "
    "window (and the class token is first), so each hop recomputes the whole window."
)
_REFERENCE = "Berg et al. 2021, Keyword Transformer; TorchKWS networks/kwt.py (kwt_from_name)"

for _name, _cfg, _params, _macs, _extra in (
    ("kwt-1", dict(dim=64, heads=1, mlp_dim=256), 557_516, 68_800_000,
     " One head of width 64: no attention output projection, as in the reference (paper: 607K)."),
    ("kwt-2", dict(dim=128, heads=2, mlp_dim=512), 2_394_508, 264_200_000, ""),
    ("kwt-3", dict(dim=192, heads=3, mlp_dim=768), 5_361_228, 571_500_000, ""),
):
    register(
        ModelCard(
            name=_name,
            family="kwt",
            builder=_build,
            config=dict(_cfg, depth=12, dim_head=64, dropout=0.0, emb_dropout=0.1),
            n_mfcc=40,
            expected_params=_params,
            expected_macs=_macs,
            streaming="windowed",
            reference=_REFERENCE,
            description=f"Keyword Transformer, dim {_cfg['dim']}, {_cfg['heads']} head(s), depth 12, post-norm",
            notes=_NOTES + _extra,
            reference_name=_name,
        )
    )
