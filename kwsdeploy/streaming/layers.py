"""Stream layers for 1-D temporal convnets: the offline padded conv and its ring-buffer step twin.

Conventions shared by the offline models and their step forms (time is the last axis):

- A conv with kernel ``k`` and dilation ``d`` reads ``r = d * (k - 1)`` frames of context.
- ``TimeConv1d`` (`kwsdeploy.models._time_conv`) pads 'same' (the reference) or causally (left only):
  output ``t`` of a causal conv with stride ``s`` reads input frames ``t*s - r .. t*s``.
- ``StreamConv1d`` is the step twin of a causal conv: its state is the last ``r`` input frames
  (zeros at the start reproduce the left padding). A packet of ``P`` frames (``P % s == 0``, and
  every packet starts on a global frame index that is a multiple of ``s``) gives ``P / s`` output
  frames, equal to the offline causal conv's frames at those indices. A 'same' conv cannot be
  streamed this way from the zero state: its right padding puts zeros where a stream has future
  frames, so 'same' networks stream in windowed mode (or with a declared delay, not done here).
- ``StreamMeanPool`` replaces global average pooling: the mean of the last ``window`` output frames
  (state: the previous ``window - 1`` frames). Fed a clip from the zero state so that exactly
  ``window`` frames have been produced, it equals the offline mean over the clip.
- State tensors are named ``state.<layer>.<kind>`` (``<layer>`` without dots): kind ``conv`` for a
  conv's input history [B, C_in, r], kind ``pool`` for a pool's output history [B, C, window - 1].
  Each stateful layer reports its ``StateSpec``; a layer without context (``r == 0``) has none.
- Everything in a step module is plain tensor ops (cat, slice, conv1d, mean) with no Python-side
  state and no data-dependent control flow, so it exports to ONNX as it is.
- Every exact step form takes ``packet_frames=k`` (`resolve_packet_frames`): k frames per call, a
  multiple of the network's natural packet (its total time stride). A k-frame call equals k/natural
  natural calls (state and last logits) and returns the logits after its last frame; the packet
  length is fixed per module, so an exported graph is straight-line code for that k.

BatchNorm folding lives in `kwsdeploy.streaming.fold`; `StreamConv1d.from_conv(conv, bn)` uses it.
"""

from __future__ import annotations

import math
import operator
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import StateSpec, StreamSpec
from kwsdeploy.features import is_exporting
from kwsdeploy.models._time_conv import TimeConv1d
from kwsdeploy.streaming.fold import fold_conv_bn


class RingBufferConv(nn.Module):
    """Base of the ring-buffer step convs: fixed (BatchNorm-folded) weights, a dot-free layer name,
    and a state of the last `context` input frames named `state.<name>.conv`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, name: str, groups: int, context: int) -> None:
        super().__init__()
        if "." in name:
            raise ValueError(f"Stream layer names may not contain '.', got {name!r} (state names are state.<layer>.<kind>).")
        self.name = name
        self.groups = int(groups)
        self.in_channels = int(weight.shape[1]) * self.groups
        self.context = int(context)
        self.register_buffer("weight", weight.detach().clone().float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())

    def _history_spec(self, *shape: int) -> StateSpec | None:
        """The StateSpec of the input history [*shape] (None without context)."""
        return None if self.context == 0 else StateSpec(f"state.{self.name}.conv", shape)


class StreamConv1d(RingBufferConv):
    """Ring-buffer step form of a causal 1-D conv (kernel, dilation, stride and groups aware).

    `y, new_state = layer(x, state)`: x [B, C_in, P] with P a multiple of the stride, state
    [B, C_in, r] (the last r input frames; None when r == 0), y [B, C_out, P // stride].
    Weights are fixed buffers (BatchNorm already folded in by `from_conv`).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        name: str,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(weight, bias, name, groups, context=int(dilation) * (int(weight.shape[-1]) - 1))
        self.stride = int(stride)
        self.dilation = int(dilation)
        self.out_channels = int(weight.shape[0])
        self.kernel_size = int(weight.shape[-1])

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, bn: nn.Module | None = None, name: str = "conv") -> "StreamConv1d":
        """Step twin of a causal `TimeConv1d` (or an unpadded 1x1 `nn.Conv1d`), BatchNorm folded in."""
        if isinstance(conv, TimeConv1d):
            if not conv.causal and conv.time_pad != (0, 0):
                raise ValueError(
                    f"Layer {name!r} pads both sides ('same'); only causal convs stream exactly. "
                    "Build the model's causal configuration or stream it in windowed mode."
                )
        elif conv.padding not in ((0,), 0, "valid"):
            raise ValueError(f"Layer {name!r}: a plain Conv1d must be unpadded to stream, got padding={conv.padding}.")
        weight, bias = fold_conv_bn(conv, bn)
        return cls(weight, bias, name, stride=conv.stride[0], dilation=conv.dilation[0], groups=conv.groups)

    @property
    def state_spec(self) -> StateSpec | None:
        """[C_in, r] input history, or None for a conv without context (kernel 1)."""
        return self._history_spec(self.in_channels, self.context)

    def count_macs(self, inputs: tuple, output: tuple) -> int:
        """MACs of one call (for `kwsdeploy.models.macs`): output elements x C_in/groups x kernel."""
        return int(output[0].numel()) * (self.in_channels // self.groups) * self.kernel_size

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.context == 0:
            if self.stride > 1:
                x = x[..., :: self.stride]
            return self._conv(x, stride=1), None
        window = torch.cat([state, x], dim=-1)
        return self._conv(window, self.stride), window[..., -self.context :]

    def _conv(self, window: torch.Tensor, stride: int) -> torch.Tensor:
        """The conv of a step's window. Eager torch runs the plain 1-D conv (its fastest); an export
        traces the form ONNX Runtime runs fastest at any batch: one output frame of a dense conv is a
        Gemm of the flattened taps, otherwise one 2-D Conv with the batch as the image's height
        (`batch_as_height_conv1d`). Same sums; the torch-vs-ONNX parity tests compare the two."""
        if not is_exporting():
            return F.conv1d(window, self.weight, self.bias, stride=stride, dilation=self.dilation, groups=self.groups)
        frames = (int(window.shape[-1]) - self.context - 1) // stride + 1
        if frames == 1 and self.groups == 1:
            taps = window
            if int(window.shape[-1]) > self.context + 1 or self.dilation > 1:  # a Slice only where one is needed
                taps = window[..., : self.context + 1 : self.dilation]
            return F.linear(taps.reshape(-1, self.in_channels * self.kernel_size),
                            self.weight.reshape(self.out_channels, -1), self.bias).unsqueeze(-1)
        return batch_as_height_conv1d(window, self.weight, self.bias, stride, self.dilation, self.groups)


def batch_as_height_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, dilation: int = 1, groups: int = 1
) -> torch.Tensor:
    """`F.conv1d(x, weight, bias, ...)` of x [B, C_in, L] computed as one 2-D conv of [1, C_in, B, L]
    with a [C_out, C_in/groups, 1, k] kernel, the batch as the image's height.

    A step call's window is short (r + P frames, 1-8 output frames), and ONNX Runtime's Conv runs
    one small im2col + GEMM per batch item: at batch 64 the tcresnet8-causal step's convs took 968 us
    per call as 1-D Convs, 145 us as these 2-D Convs (plus 144 us of Transposes), whose single GEMM
    covers every stream (benchmarks/results/<machine>/step_graph_batch_layout.md).
    Same sums, same result: the two Transposes move the (small) window and output only."""
    y = F.conv2d(
        x.transpose(0, 1).unsqueeze(0), weight.unsqueeze(2), bias,
        stride=(1, stride), dilation=(1, dilation), groups=groups,
    )
    return y.squeeze(0).transpose(0, 1)


class StreamMeanPool(nn.Module):
    """Sliding-window mean over the last `window` frames, replacing global average pooling.

    `pooled, new_state = pool(x, state)`: x [B, C, n], state [B, C, window - 1] (None when
    window == 1), pooled [B, C].
    """

    def __init__(self, channels: int, window: int, name: str = "pool") -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"Pool window must be >= 1 frame, got {window}.")
        self.channels = int(channels)
        self.window = int(window)
        self.name = name

    @property
    def state_spec(self) -> StateSpec | None:
        """[C, window - 1] output history, or None for a 1-frame window."""
        if self.window == 1:
            return None
        return StateSpec(f"state.{self.name}.pool", (self.channels, self.window - 1))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.window == 1:
            return x[..., -1], None
        frames = torch.cat([state, x], dim=-1)
        return frames[..., -self.window :].mean(dim=-1), frames[..., -(self.window - 1) :]


def resolve_packet_frames(packet_frames: object, natural: int, model: str, option: str = "packet_frames") -> int:
    """Frames per step call: `natural` when `packet_frames` is None, else a positive multiple of it.

    `natural` is the smallest packet the step form processes exactly (the network's total time
    stride: 8 for TC-ResNet, 1 for stride-free networks). Anything else is a one-line ValueError.
    """
    if packet_frames is None:
        return int(natural)
    what = "a positive integer" if natural == 1 else f"a positive multiple of {natural} (the total time stride of {model})"
    if isinstance(packet_frames, bool):
        raise ValueError(f"{option} must be {what}, got {packet_frames!r}.")
    try:
        packet = operator.index(packet_frames)  # ints and numpy ints; no floats or strings
    except TypeError:
        raise ValueError(f"{option} must be {what}, got {packet_frames!r}.") from None
    if packet < 1 or packet % natural:
        raise ValueError(f"{option} must be {what}, got {packet}.")
    return int(packet)


class StepModule(nn.Module):
    """Base of every step form, with one signature for all of them:

        step = Step(model, packet_frames=None, feature_config=None, **family_options)
        logits, *new_state = step(features, *state)   # features [B, C, packet_frames]
        step.stream_spec; step.init_state(batch)       # zero state in stream_spec.states order

    Subclasses set `self.stream_spec` in `__init__` and implement `forward(features, *state)`.
    """

    stream_spec: StreamSpec

    def forward(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero state for `batch` streams, in `stream_spec.states` order, on the module's device."""
        device = next(iter([*self.parameters(), *self.buffers()]), torch.zeros(0)).device
        return tuple(
            torch.zeros((batch, *s.shape), dtype=getattr(torch, s.dtype), device=device) for s in self.stream_spec.states
        )


def require_causal(model: nn.Module, which: str) -> None:
    """One-line ValueError unless `model` is a causal configuration (`which` names one, e.g. for the message)."""
    if not getattr(model, "causal", False):
        raise ValueError(f"Only a causal {which} has an exact step form; stream others windowed.")


def exact_stream_spec(
    packet: int,
    window_frames: int,
    n_mfcc: int,
    num_classes: int,
    states: Sequence[StateSpec],
    feature_config: FeatureConfig | None = None,
) -> StreamSpec:
    """The StreamSpec of an exact step form (no delay); the feature config defaults to the deployable one."""
    return StreamSpec(
        mode="exact",
        packet_frames=int(packet),
        delay_frames=0,
        window_frames=int(window_frames),
        n_mfcc=int(n_mfcc),
        num_classes=int(num_classes),
        states=tuple(states),
        feature_config=feature_config or FeatureConfig.deployable(int(n_mfcc)),
    )


def collect_state_specs(layers: Sequence[nn.Module]) -> tuple[StateSpec, ...]:
    """The StateSpecs of `layers` (StreamConv1d / StreamMeanPool) in order, skipping stateless ones."""
    specs = tuple(s for s in (layer.state_spec for layer in layers) if s is not None)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate state names in a step module: {names}")
    return specs


def step_layer(
    layer: nn.Module, x: torch.Tensor, states: Iterator[torch.Tensor], new_states: list[torch.Tensor]
) -> torch.Tensor:
    """Run a StreamConv1d / StreamMeanPool inside a step forward: take its state from `states` (only
    if it has one), append its new state to `new_states`, return its output. Keeps state order
    equal to `collect_state_specs` order when layers are called in the order they were collected."""
    if layer.state_spec is None:
        return layer(x, None)[0]
    y, new = layer(x, next(states))
    new_states.append(new)
    return y


def stream_clip(step: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Feed a clip [B, n_mfcc, T] packet by packet from the zero state; return the last logits.

    The tail is zero-padded to a whole number of packets (causal step forms ignore it when the
    padded frames add no pooled output frame; see each family's converter).
    """
    spec = step.stream_spec
    packet = spec.packet_frames
    frames = features.shape[-1]
    n_packets = math.ceil(frames / packet)
    if n_packets * packet != frames:
        features = F.pad(features, (0, n_packets * packet - frames))
    state = step.init_state(features.shape[0])
    logits = None
    for i in range(n_packets):
        logits, *state = step(features[..., i * packet : (i + 1) * packet], *state)
    return logits
