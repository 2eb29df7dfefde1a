"""Step form of the causal Keyword Mamba: per layer the unrolled selective-SSM recurrence.

State per layer i: `state.layer<i>.conv` [d_conv-1, d_inner] (the last d_conv-1 inputs of the
causal depthwise conv) and `state.layer<i>.ssm` [d_state, d_inner]: the mixer's own layouts
(`MambaMixer.state_shapes`) transposed, so that every state-sized tensor of the step graph has
d_inner as its contiguous last axis (see `chunk_mix`). The block's residual stream
is per frame, so it needs no state. With `readout="mean"` (the causal cards' default) one more
state, `state.logits.pool` [classes, 97], keeps the last second's per-frame logits, whose mean
is the output (a sliding window, exact from the zero state once a second has been fed). `packet_frames=1` (default) runs one frame per call with no
loop (a chunk of one frame: the [B, frames, ...] layout throughout, no Squeeze/Unsqueeze); `packet_frames=k` runs k frames per call, carrying both states across calls, and returns the
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
            conv_shape, ssm_shape = step_state_shapes(layer.mixer)
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
            frame_logits, new_state = self.chunk(features, state[:-1])
            logits, window = self.pool(frame_logits.transpose(1, 2), state[-1])
            return (logits, *new_state, window)
        hidden, residual, new_state = self._mix_chunk(features, state)
        logits = self.model.head(self.model.final_norm(hidden[:, -1], residual[:, -1]))
        return (logits, *new_state)

    def step(
        self, frame: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame [B, n_mfcc] -> (that frame's logits [B, classes], new layer state): the unrolled
        recurrence (`state`: the layers' states only, without the readout window)."""
        logits, new_state = self.chunk(frame.unsqueeze(-1), state)
        return logits[:, 0], new_state

    def chunk(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """N frames [B, n_mfcc, N] -> (logits after every frame [B, N, classes], new state)."""
        hidden, residual, new_state = self._mix_chunk(features, state)
        return self.model.head(self.model.final_norm(hidden, residual)), new_state

    def _mix_chunk(
        self, features: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """The layers over N frames: (hidden [B, N, D], residual [B, N, D], new state). Every frame
        count, 1 included, keeps the [B, N, ...] layout (a 1-frame step is a chunk of one frame)."""
        model = self.model
        hidden, residual = model.patch_embed(features.transpose(1, 2)), None
        new_state: list[torch.Tensor] = []
        for i, layer in enumerate(model.layers):
            h, residual = layer.pre_mix(hidden, residual)
            h, conv, ssm = chunk_mix(layer.mixer, h, state[2 * i], state[2 * i + 1])
            hidden, residual = layer.post_mix(h, residual)
            new_state += [conv, ssm]
        return hidden, residual, tuple(new_state)


def step_state_shapes(mixer: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """Per-sample shapes of the step form's (conv state, ssm state): [d_conv-1, d_inner] and
    [d_state, d_inner], the mixer's own layouts transposed so that d_inner (384 at reference
    size) is the contiguous last axis of every state-sized tensor."""
    (d_inner, taps), (_, d_state) = mixer.state_shapes()
    return (taps, d_inner), (d_state, d_inner)


def chunk_mix(
    mixer: nn.Module, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A causal MambaMixer over a chunk [B, L, d_model] from (conv_state [B, d_conv-1, d_inner],
    ssm_state [B, d_state, d_inner]): the equations of `MambaMixer.forward_with_state` (whose
    states are these transposed), laid out for small, fast step graphs.

    Every tensor keeps d_inner as its last axis: the conv window is a Concat along time, the state
    update's broadcasts run over contiguous rows of d_inner (ONNX Runtime's broadcast Mul over a
    last axis of d_state=16 ran ~4x slower), the input term dt u B is one batched MatMul
    ([d_state, 1] x [1, d_inner] per stream) and the C readout another ([1, d_state] x [d_state,
    d_inner]). The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is unrolled over the L
    frames (one Mul and one Add per frame); for L = 1 there is no time axis to split or join.
    """
    length = hidden.shape[1]
    d_inner, n = mixer.d_inner, mixer.d_state
    xz = mixer.in_proj(hidden)
    x, z = xz.split(d_inner, dim=-1)  # [B, L, d_inner], one Split node
    taps = mixer.conv1d.weight.shape[-1]
    window = torch.cat([conv_state.to(x.dtype), x], dim=1)  # [B, d_conv-1+L, d_inner]
    if length == 1:
        xc = (window * mixer.conv1d.weight[:, 0, :].t()).sum(dim=1, keepdim=True)  # [B, 1, d_inner]
        if mixer.conv1d.bias is not None:
            xc = xc + mixer.conv1d.bias
    else:
        xc = F.conv1d(window.transpose(1, 2), mixer.conv1d.weight, mixer.conv1d.bias, groups=d_inner).transpose(1, 2)
    conv_state = window[:, -(taps - 1):] if taps > 1 else window[:, :0]  # a constant-start Slice
    xc = F.silu(xc)  # [B, L, d_inner]
    dt, Bm, Cm = torch.split(mixer.x_proj(xc), [mixer.dt_rank, n, n], dim=-1)
    dt = F.softplus(mixer.dt_proj(dt))  # [B, L, d_inner]
    A = -torch.exp(mixer.A_log.float()).t()  # [d_state, d_inner], a constant of the graph
    u = dt * xc
    if length == 1:
        # [B, 1, d_inner] * [d_state, d_inner] -> [B, d_state, d_inner]: the state's layout
        h = torch.exp(dt * A) * ssm_state + torch.matmul(Bm.transpose(1, 2), u)
        y = torch.matmul(Cm, h)  # [B, 1, d_state] x [B, d_state, d_inner] -> [B, 1, d_inner]
    else:
        decay = torch.exp(dt.unsqueeze(2) * A)  # [B, L, d_state, d_inner]
        inputs = torch.matmul(Bm.unsqueeze(-1), u.unsqueeze(2))  # [B, L, d_state, 1] x [B, L, 1, d_inner]
        h = ssm_state.unsqueeze(1)
        states = []
        for decay_t, input_t in zip(decay.split(1, dim=1), inputs.split(1, dim=1)):
            h = decay_t * h + input_t
            states.append(h)
        hs = torch.cat(states, dim=1)  # [B, L, d_state, d_inner]
        y = torch.matmul(Cm.unsqueeze(2), hs).squeeze(2)  # [B, L, d_inner]
        h = h.squeeze(1)
    y = (y + mixer.D * xc) * F.silu(z)
    return mixer.out_proj(y), conv_state, h


register_converter("kwm", CausalKwmStream)
