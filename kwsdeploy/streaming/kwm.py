"""Step form of the causal Keyword Mamba: per layer the unrolled selective-SSM recurrence.

State per layer i: `state.layer<i>.conv` [d_inner, d_conv-1] (the last d_conv-1 inputs of the
causal depthwise conv) and `state.layer<i>.ssm` [d_inner, d_state]. The block's residual stream
is per frame, so it needs no state. `chunk_frames=1` (default) runs one frame per call with no
loop (ONNX-exportable); `chunk_frames=N` runs N frames per call through the parallel scan,
carrying both states across calls, and returns the logits of the chunk's last frame.

Reset policy: `init_state` (zeros) at the start of a stream; no periodic reset. The SSM state is a
fading memory (each frame multiplies it by exp(dt*A) with dt > 0 and A < 0), so it stays bounded
on arbitrarily long streams (tests: 60,000 frames).
"""

from __future__ import annotations

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.streaming.convert import register_converter
from kwsdeploy.streaming.spec import StateSpec, StreamSpec


class CausalKwmStream(nn.Module):
    """`logits, *new_state = f(features [B, n_mfcc, chunk_frames], *state)`, weights shared with `model`."""

    def __init__(
        self, model: nn.Module, chunk_frames: int = 1, feature_config: FeatureConfig | None = None
    ) -> None:
        super().__init__()
        if not getattr(model, "causal", False):
            raise ValueError(
                f"{getattr(model, 'model_name', type(model).__name__)} is bidirectional and has no step form; "
                "stream it with to_streaming(model, mode='windowed') or use a kwm-causal-* model."
            )
        if int(chunk_frames) < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}.")
        self.model = model.eval()
        self.chunk_frames = int(chunk_frames)
        n_mfcc = int(model.patch_embed.in_features)
        states = []
        for i, layer in enumerate(model.layers):
            conv_shape, ssm_shape = layer.mixer.state_shapes()
            states += [StateSpec(f"state.layer{i}.conv", conv_shape), StateSpec(f"state.layer{i}.ssm", ssm_shape)]
        self.stream_spec = StreamSpec(
            mode="exact",
            packet_frames=self.chunk_frames,
            delay_frames=0,
            window_frames=int(model.frames),
            n_mfcc=n_mfcc,
            num_classes=int(model.head.out_features),
            states=tuple(states),
            feature_config=feature_config or FeatureConfig.deployable(n_mfcc),
        )

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero state (the start of a stream), in `stream_spec.states` order."""
        device = self.model.head.weight.device
        return tuple(torch.zeros((batch, *s.shape), device=device) for s in self.stream_spec.states)

    def extra_macs(self, frames: int) -> int:
        """MACs per call of `frames` frames that Linear hooks miss (conv taps, ~3 per scan element)."""
        return int(self.model.extra_macs(frames))

    def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.chunk_frames == 1:
            logits, new_state = self.step(features[:, :, 0], state)
        else:
            all_logits, new_state = self.chunk(features, state)
            logits = all_logits[:, -1]
        return (logits, *new_state)

    def step(
        self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame [B, n_mfcc] -> (logits [B, classes], new state): the unrolled recurrence."""
        model = self.model
        hidden, residual = model.patch_embed(frame), None
        new_state: list[torch.Tensor] = []
        for i, layer in enumerate(model.layers):
            h, residual = layer.pre_mix(hidden, residual)
            h, conv, ssm = layer.mixer.step(h, state[2 * i], state[2 * i + 1])
            hidden, residual = layer.post_mix(h, residual)
            new_state += [conv, ssm]
        return model.head(model.final_norm(hidden, residual)), tuple(new_state)

    def chunk(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """N frames [B, n_mfcc, N] -> (logits after every frame [B, N, classes], new state)."""
        model = self.model
        hidden, residual = model.patch_embed(features.transpose(1, 2)), None
        new_state: list[torch.Tensor] = []
        for i, layer in enumerate(model.layers):
            h, residual = layer.pre_mix(hidden, residual)
            h, conv, ssm = layer.mixer.forward_with_state(h, state[2 * i], state[2 * i + 1])
            hidden, residual = layer.post_mix(h, residual)
            new_state += [conv, ssm]
        return model.head(model.final_norm(hidden, residual)), tuple(new_state)


def _convert(model: nn.Module, chunk_frames: int = 1, feature_config: FeatureConfig | None = None) -> CausalKwmStream:
    return CausalKwmStream(model, chunk_frames=chunk_frames, feature_config=feature_config)


register_converter("kwm", _convert)
