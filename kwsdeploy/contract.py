"""The step contract, torch-free: names, state and stream specs, clip and hop arithmetic.

Imported by the manifest, the runtime and the torch step forms alike; imports no torch (a test
checks it), so a device runner needs only numpy. A streaming model `smodel` exposes
`smodel.stream_spec` (a `StreamSpec`), `smodel.init_state(batch)` (a tuple of zero tensors in
`spec.states` order) and `logits, *new_state = smodel(features_packet, *state)` with
`features_packet` of shape [B, n_mfcc, packet_frames]. Names are stable and shared with ONNX graphs
and bundle manifests: inputs `features` (or `audio`) and `state.<layer>.<kind>`, outputs `logits`
and `new_state.<layer>.<kind>` (`new_state_name`). Every frame count and duration derives from a
`FeatureConfig` (`clip_frames`, `hop_seconds`, `samples_to_seconds`): no module repeats 98 or 16000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from kwsdeploy.config import FeatureConfig

FEATURES = "features"
AUDIO = "audio"
LOGITS = "logits"
STATE_PREFIX = "state."
NEW_STATE_PREFIX = "new_state."

DEFAULT_FEATURES = FeatureConfig()
SAMPLE_RATE = DEFAULT_FEATURES.sample_rate  # 16 kHz: every prepared clip and recording
CLIP_SAMPLES = DEFAULT_FEATURES.clip_samples  # one 1 s clip
CLIP_FRAMES = DEFAULT_FEATURES.clip_frames  # frames of a 1 s clip at the default frontend (98)
WINDOW_HOP_FRAMES = 10  # a windowed stream recomputes its last second every 10 frames (100 ms)


def is_state_name(name: str) -> bool:
    """Whether a graph input name is a state input (`state.<layer>.<kind>`)."""
    return name.startswith(STATE_PREFIX)


def new_state_name(state_name: str) -> str:
    """The output carrying a state's update: `state.<layer>.<kind>` -> `new_state.<layer>.<kind>`."""
    if not is_state_name(state_name):
        raise ValueError(f"State names start with {STATE_PREFIX!r}: got {state_name!r}")
    return NEW_STATE_PREFIX + state_name[len(STATE_PREFIX):]


def hop_seconds(packet_frames: int, feature_config: FeatureConfig = DEFAULT_FEATURES) -> float:
    """Seconds of audio per step call: `packet_frames` feature hops."""
    return packet_frames * feature_config.hop_length / feature_config.sample_rate


def smoothing_packets(smoothing_seconds: float, hop_s: float) -> int:
    """A detector's smoothing window of `smoothing_seconds` in packets of `hop_s` seconds (at least one)."""
    return max(1, int(round(smoothing_seconds / hop_s)))


def packet_samples(packet_frames: int, feature_config: FeatureConfig = DEFAULT_FEATURES) -> int:
    """Audio samples per step call of `packet_frames` frames."""
    return int(packet_frames) * feature_config.hop_length


def samples_to_seconds(samples: int, feature_config: FeatureConfig = DEFAULT_FEATURES) -> float:
    """Duration of `samples` samples at the frontend's sample rate."""
    return samples / feature_config.sample_rate


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: `shape` excludes the leading (dynamic) batch axis."""

    name: str  # "state.<layer>.<kind>"
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not is_state_name(self.name):
            raise ValueError(f"State names start with {STATE_PREFIX!r}: got {self.name!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def output_name(self) -> str:
        """The graph output carrying this state's update: `new_state.<layer>.<kind>`."""
        return new_state_name(self.name)

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
    window_frames: frames the logits summarise (`feature_config.clip_frames` for a 1 s clip).
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
    def hop_seconds(self) -> float:
        """Seconds of audio per step call."""
        return hop_seconds(self.packet_frames, self.feature_config)

    @property
    def packet_samples(self) -> int:
        """Audio samples per step call (the input of a graph with the frontend inside)."""
        return packet_samples(self.packet_frames, self.feature_config)

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


@dataclass(frozen=True)
class DetectionSettings:
    """How keyword events are cut from a stream of logits (data, not code: bundles carry them).

    threshold: smoothed probability that fires an event; smoothing_seconds: posterior moving-average
    window; refractory_seconds: time after a keyword's event in which that keyword does not fire again
    (a 1 s window keeps a word in view for up to a second after it ends, hence a little more than
    that); min_gap_seconds: time after any event in which no keyword fires (one word does not fire
    under two names, yet digits said a second apart are all heard); temperature: posteriors are
    softmax(logits / temperature) before smoothing (below 1 sharpens them, so the average rewards a
    keyword the model keeps naming; `kwsdeploy tune` tries 1 and 0.5 and keeps the better one on its
    recording); tuned: how `kwsdeploy tune` chose them (target, recording, measured rates), None for the
    defaults.
    """

    threshold: float = 0.7
    smoothing_seconds: float = 0.2
    refractory_seconds: float = 1.2
    min_gap_seconds: float = 0.5
    tuned: Mapping[str, Any] | None = field(default=None, compare=True, hash=False)
    # Per keyword (label -> threshold; `threshold` for a keyword not listed): `kwsdeploy tune` sets each
    # keyword's just above its own false alarms instead of every keyword's above the worst one's.
    keyword_thresholds: Mapping[str, float] | None = field(default=None, compare=True, hash=False)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold is a probability in (0, 1], got {self.threshold}.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0 (1: plain softmax), got {self.temperature}.")
        if self.keyword_thresholds is not None:
            kt = {str(k): float(v) for k, v in dict(self.keyword_thresholds).items()}
            bad = {k: v for k, v in kt.items() if not 0.0 < v <= 1.0}
            if bad:
                raise ValueError(f"keyword thresholds are probabilities in (0, 1], got {bad}.")
            object.__setattr__(self, "keyword_thresholds", kt or None)
        if not self.smoothing_seconds >= 0:
            raise ValueError(f"smoothing_seconds must be >= 0 (0: one packet), got {self.smoothing_seconds}.")
        if not self.refractory_seconds >= 0:
            raise ValueError(f"refractory_seconds must be >= 0, got {self.refractory_seconds}.")
        if not self.min_gap_seconds >= 0:
            raise ValueError(f"min_gap_seconds must be >= 0, got {self.min_gap_seconds}.")

    def smoothing_packets(self, hop_s: float) -> int:
        """The smoothing window in packets of `hop_s` seconds (at least one)."""
        return smoothing_packets(self.smoothing_seconds, hop_s)

    def threshold_text(self) -> str:
        """'0.9', or 'per keyword 0.3-0.95' (for messages)."""
        if not self.keyword_thresholds:
            return f"{self.threshold:.4g}"
        values = sorted(self.keyword_thresholds.values())
        return f"per keyword {values[0]:.4g}-{values[-1]:.4g}"

    def threshold_for(self, label: str) -> float:
        """The threshold that fires `label` (its own, else `threshold`)."""
        return float((self.keyword_thresholds or {}).get(label, self.threshold))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (manifest form)."""
        d: dict[str, Any] = {"threshold": self.threshold, "smoothing_seconds": self.smoothing_seconds,
                             "refractory_seconds": self.refractory_seconds, "min_gap_seconds": self.min_gap_seconds}
        if self.keyword_thresholds is not None:
            d["keyword_thresholds"] = dict(self.keyword_thresholds)
        if self.temperature != 1.0:  # written only when it matters: older readers know the rest
            d["temperature"] = self.temperature
        if self.tuned is not None:
            d["tuned"] = dict(self.tuned)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DetectionSettings":
        """Inverse of `to_dict`; an unknown key is a ValueError."""
        unknown = sorted(set(d) - {"threshold", "smoothing_seconds", "refractory_seconds", "min_gap_seconds", "tuned",
                                   "keyword_thresholds", "temperature"})
        if unknown:
            raise ValueError(f"unknown detection setting(s) {unknown}")
        kt = d.get("keyword_thresholds")
        if kt is not None and not isinstance(kt, Mapping):
            raise ValueError(f"keyword_thresholds must map labels to thresholds, got {kt!r}")
        return cls(**{k: (v if k in ("tuned", "keyword_thresholds") else float(v)) for k, v in d.items()})


DEFAULT_DETECTION = DetectionSettings()
