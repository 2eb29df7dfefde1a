"""Step form of the causal Keyword Mamba: per layer the unrolled selective-SSM recurrence.

State per layer i: `state.layer<i>.conv` [d_inner, d_conv-1] (the last d_conv-1 inputs of the
causal depthwise conv) and `state.layer<i>.ssm` [d_inner, d_state]. The block's residual stream
is per frame, so it needs no state. With `readout="mean"` (the causal cards' default) one more
state, `state.logits.pool` [classes, 97], keeps the last second's per-frame logits, whose mean
is the output (a sliding window, exact from the zero state once a second has been fed). `packet_frames=1` (default) runs one frame per call with no
loop; `packet_frames=k` runs k frames per call, carrying both states across calls, and returns the
logits of the packet's last frame (only that frame goes through the final norm and head). The
chunk's scan (`chunk_mix`) is unrolled over the k frames: the graph for a fixed k is straight-line
code of about 2 extra nodes per frame and layer. `chunk_frames` is the older name of `packet_frames`.

Reset policy: `init_state` (zeros) at the start of a stream; no periodic reset. The SSM state is a
fading memory (each frame multiplies it by exp(dt*A) with dt > 0 and A < 0), so it stays bounded
on arbitrarily long streams (tests: 60,000 frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import StateSpec
from kwsdeploy.models._mamba_mixer import causal_depthwise_conv
from kwsdeploy.models.registry import display_name
from kwsdeploy.streaming.convert import register_converter
from kwsdeploy.streaming.layers import StepModule, StreamMeanPool, exact_stream_spec, resolve_packet_frames


class CausalKwmStream(StepModule):
    """`logits, *new_state = f(features [B, n_mfcc, packet_frames], *state)`, weights shared with `model`."""

    def __init__(
        self,
        model: nn.Module,
        packet_frames: int | None = None,
        feature_config: FeatureConfig | None = None,
        chunk_frames: int | None = None,
    ) -> None:
        super().__init__()
        name = display_name(model)
        if not getattr(model, "causal", False):
            raise ValueError(
                f"{name} is bidirectional and has no step form; "
                "stream it with to_streaming(model, mode='windowed') or use a kwm-causal-* model."
            )
        if chunk_frames is not None and packet_frames is not None and chunk_frames != packet_frames:
            raise ValueError(
                f"packet_frames={packet_frames!r} and chunk_frames={chunk_frames!r} disagree; "
                "chunk_frames is the old name of packet_frames: give only packet_frames."
            )
        option = "chunk_frames" if packet_frames is None and chunk_frames is not None else "packet_frames"
        packet = resolve_packet_frames(packet_frames if packet_frames is not None else chunk_frames, 1, name, option)
        self.model = model.eval()
        self.packet_frames = packet
        n_mfcc = int(model.patch_embed.in_features)
        states = []
        for i, layer in enumerate(model.layers):
            conv_shape, ssm_shape = layer.mixer.state_shapes()
            states += [StateSpec(f"state.layer{i}.conv", conv_shape), StateSpec(f"state.layer{i}.ssm", ssm_shape)]
        num_classes = int(model.head.out_features)
        self.pool = (
            StreamMeanPool(num_classes, int(model.frames), name="logits")
            if getattr(model, "readout", "last") == "mean" else None
        )
        if self.pool is not None:
            states.append(self.pool.state_spec)
        self.stream_spec = exact_stream_spec(
            packet, int(model.frames), n_mfcc, int(model.head.out_features), states, feature_config
        )
        # A zero-padded clip ends on the offline logits when its last packet ends on its last frame.
        self.clip_exact = int(model.frames) % packet == 0

    @property
    def chunk_frames(self) -> int:
        """The older name of `packet_frames`."""
        return self.packet_frames

    def extra_macs(self, frames: int) -> int:
        """MACs per call of `frames` frames that Linear hooks miss (conv taps, ~3 per scan element)."""
        return int(self.model.extra_macs(frames))

    def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.pool is not None:  # every frame's logits go into the window; its mean is the output
            if self.packet_frames == 1:
                frame_logits, new_state = self.step(features[:, :, 0], state[:-1])
                frame_logits = frame_logits.unsqueeze(-1)
            else:
                frame_logits, new_state = self.chunk(features, state[:-1])
                frame_logits = frame_logits.transpose(1, 2)
            logits, window = self.pool(frame_logits, state[-1])
            return (logits, *new_state, window)
        if self.packet_frames == 1:
            logits, new_state = self.step(features[:, :, 0], state)
        else:
            hidden, residual, new_state = self._mix_chunk(features, state)
            logits = self.model.head(self.model.final_norm(hidden[:, -1], residual[:, -1]))
        return (logits, *new_state)

    def step(
        self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame [B, n_mfcc] -> (that frame's logits [B, classes], new layer state): the unrolled
        recurrence (`state`: the layers' states only, without the readout window)."""
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
        hidden, residual, new_state = self._mix_chunk(features, state)
        return self.model.head(self.model.final_norm(hidden, residual)), new_state

    def _mix_chunk(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """The layers over N frames: (hidden [B, N, D], residual [B, N, D], new state)."""
        model = self.model
        hidden, residual = model.patch_embed(features.transpose(1, 2)), None
        new_state: list[torch.Tensor] = []
        for i, layer in enumerate(model.layers):
            h, residual = layer.pre_mix(hidden, residual)
            h, conv, ssm = chunk_mix(layer.mixer, h, state[2 * i], state[2 * i + 1])
            hidden, residual = layer.post_mix(h, residual)
            new_state += [conv, ssm]
        return hidden, residual, tuple(new_state)


def chunk_mix(
    mixer: nn.Module, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A causal MambaMixer over a chunk [B, L, d_model] from (conv_state, ssm_state); the contract
    and equations of `MambaMixer.forward_with_state`, laid out for small step graphs.

    The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is unrolled over the L frames, kept in
    the [B, L, ...] layout of the projections (no Transpose for ONNX Runtime to push into the loop):
    one Split per operand, one Mul and one Add per frame, one Concat, so a traced k-frame graph
    grows by about 2 nodes per frame and layer.
    """
    xz = mixer.in_proj(hidden)
    x, z = xz.split(mixer.d_inner, dim=-1)  # [B, L, d_inner], one Split node
    xc, conv_state = causal_depthwise_conv(x.transpose(1, 2), mixer.conv1d.weight, mixer.conv1d.bias, conv_state)
    xc = F.silu(xc).transpose(1, 2)  # [B, L, d_inner]
    dt, Bm, Cm = torch.split(mixer.x_proj(xc), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    dt = F.softplus(mixer.dt_proj(dt))  # [B, L, d_inner]
    A = -torch.exp(mixer.A_log.float())  # [d_inner, d_state]
    decay = torch.exp(dt.unsqueeze(-1) * A)  # [B, L, d_inner, d_state]
    inputs = (dt * xc).unsqueeze(-1) * Bm.unsqueeze(2)  # dt_t u_t B_t, same layout
    h = ssm_state.unsqueeze(1)
    states = []
    for decay_t, input_t in zip(decay.split(1, dim=1), inputs.split(1, dim=1)):
        h = decay_t * h + input_t
        states.append(h)
    hs = torch.cat(states, dim=1)  # [B, L, d_inner, d_state]
    y = (hs * Cm.unsqueeze(2)).sum(dim=-1)  # [B, L, d_inner]
    y = (y + mixer.D * xc) * F.silu(z)
    return mixer.out_proj(y), conv_state, h.squeeze(1)


register_converter("kwm", CausalKwmStream)
