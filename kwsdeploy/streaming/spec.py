"""The step contract's description: what a streaming model consumes, keeps and emits (torch-free).

A streaming model `smodel` exposes `smodel.stream_spec` (a `StreamSpec`), `smodel.init_state(batch)`
(a tuple of zero tensors in `spec.states` order) and
`logits, *new_state = smodel(features_packet, *state)` with `features_packet` of shape
[B, n_mfcc, packet_frames]. Names are stable and shared with ONNX graphs and bundle manifests:
inputs `features` and `state.<layer>.<kind>`, outputs `logits` and `new_state.<layer>.<kind>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from kwsdeploy.config import FeatureConfig

FEATURES = "features"
AUDIO = "audio"
LOGITS = "logits"
STATE_PREFIX = "state."
NEW_STATE_PREFIX = "new_state."


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: `shape` excludes the leading (dynamic) batch axis."""

    name: str  # "state.<layer>.<kind>"
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.name.startswith(STATE_PREFIX):
            raise ValueError(f"State names start with {STATE_PREFIX!r}: got {self.name!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def output_name(self) -> str:
        """The graph output carrying this state's update: `new_state.<layer>.<kind>`."""
        return NEW_STATE_PREFIX + self.name[len(STATE_PREFIX):]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (manifest form)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StateSpec":
        """Inverse of `to_dict`."""
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"))


class StateNames:
    """`state_names` / `new_state_names` of a spec with a `states` tuple of StateSpecs (graph I/O order)."""

    states: tuple[StateSpec, ...]

    @property
    def state_names(self) -> list[str]:
        """Input names of the states, in order."""
        return [s.name for s in self.states]

    @property
    def new_state_names(self) -> list[str]:
        """Output names of the updated states, in order."""
        return [s.output_name for s in self.states]


@dataclass(frozen=True)
class StreamSpec(StateNames):
    """How a step model streams.

    mode: "exact" (a true recurrent step) or "windowed" (ring buffer of the last window + recompute).
    packet_frames: feature frames consumed per call (the hop, in frames).
    delay_frames: frames by which outputs lag the offline model's (look-ahead turned into latency).
    window_frames: frames the logits summarise (98 for a 1 s clip).
    """

    mode: str
    packet_frames: int
    delay_frames: int
    window_frames: int
    n_mfcc: int
    num_classes: int
    states: tuple[StateSpec, ...] = ()
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)

    @property
    def warmup_packets(self) -> int:
        """Packets to feed from the zero state before the logits describe one full window."""
        frames = self.window_frames + self.delay_frames
        return -(-frames // self.packet_frames)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (manifest form)."""
        return {
            "mode": self.mode,
            "packet_frames": self.packet_frames,
            "delay_frames": self.delay_frames,
            "window_frames": self.window_frames,
            "n_mfcc": self.n_mfcc,
            "num_classes": self.num_classes,
            "states": [s.to_dict() for s in self.states],
            "feature_config": self.feature_config.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StreamSpec":
        """Inverse of `to_dict`."""
        return cls(
            mode=d["mode"],
            packet_frames=int(d["packet_frames"]),
            delay_frames=int(d["delay_frames"]),
            window_frames=int(d["window_frames"]),
            n_mfcc=int(d["n_mfcc"]),
            num_classes=int(d["num_classes"]),
            states=tuple(StateSpec.from_dict(s) for s in d.get("states", [])),
            feature_config=FeatureConfig.from_dict(d.get("feature_config", {})),
        )
