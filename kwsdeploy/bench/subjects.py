"""What a benchmark row times: one model in one mode (step, windowed, offline) with one packet size,
features or audio in, as a torch module and as an ONNX graph exported once and shared by runtimes.

A model with a shipped demo checkpoint is timed with it; any other is built with random weights
(`torch.manual_seed(0)`; latency does not depend on the values) and its rows say so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kwsdeploy.contract import WINDOW_HOP_FRAMES, hop_seconds, samples_to_seconds

MODES = ("step", "windowed", "offline")
DEFAULT_WINDOW_HOP = WINDOW_HOP_FRAMES  # a windowed stream recomputes the last second every 100 ms


class NotApplicable(ValueError):
    """This combination does not exist (e.g. a step row for a model without an exact step form)."""


@dataclass(frozen=True)
class SubjectKey:
    model: str
    mode: str
    packet_frames: int | None  # None: the natural packet (step) or DEFAULT_WINDOW_HOP (windowed)
    frontend: bool


@dataclass
class Subject:
    """A prepared (model, mode, packet, frontend): torch callable, input packets, costs, lazy ONNX graph."""

    key: SubjectKey
    card_name: str
    weights: str  # "demo checkpoint" or "random init"
    labels: list[str]
    feature_config: Any
    module: Any  # torch module: step (data, *state) -> (logits, *new_state) or offline data -> logits
    init_state: Callable[[int], tuple]
    packet_frames: int  # feature frames per call (offline: the clip's frames)
    audio_seconds_per_call: float
    input_kind: str  # "features" or "audio"
    params: int
    macs_per_call: int
    frontend_macs_per_call: int
    exporter: str
    _onnx: dict = field(default_factory=dict)

    @property
    def stateful(self) -> bool:
        return self.key.mode != "offline"

    @property
    def state_bytes(self) -> int:
        """Bytes of the state one stream carries into a call (the call writes as many out); 0 offline."""
        return sum(int(t.numel()) * int(t.element_size()) for t in self.init_state(1)) if self.stateful else 0

    def onnx_parts(self):
        """(fp32 model graph, fp32 frontend graph or None), exported on first use, then cached."""
        if "parts" not in self._onnx:
            self._onnx["parts"] = _export(self)
        return self._onnx["parts"]

    def onnx_graph(self, model_pass=None):
        """The whole graph: `model_pass` (a precision's graph pass) applied to the model graph, the
        frontend (fp32, as bundles keep it) attached in front."""
        from kwsdeploy.exporters.onnx import attach_frontend

        core, front = self.onnx_parts()
        if model_pass is not None:
            core = model_pass(core)
        return attach_frontend(front, core) if front is not None else core

    def packets(self, audio: np.ndarray, count: int) -> list[np.ndarray]:
        """`count` consecutive per-stream inputs cut from `audio` (cycled): the same audio for every runtime."""
        return _packets(self, audio, count)


def _load(card_name: str):
    """(model, labels, feature config, weights note) from the demo checkpoint, else random init."""
    import torch

    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.models.registry import create, get_card, kws_info
    from kwsdeploy.train.checkpoint import CheckpointError, demo_checkpoint_path, load_checkpoint

    card = get_card(card_name)
    try:
        ck = load_checkpoint(demo_checkpoint_path(card.name))
        return ck.model.eval(), list(ck.labels), ck.feature_config, "demo checkpoint"
    except CheckpointError:
        torch.manual_seed(0)
        model = create(card.name).eval()
        kws = kws_info(model)
        return model, [f"class{i}" for i in range(kws.num_classes)], FeatureConfig.deployable(kws.n_mfcc), "random init"


@functools.lru_cache(maxsize=32)
def _loaded(card_name: str):
    return _load(card_name)


def prepare(key: SubjectKey, exporter: str = "legacy") -> Subject:
    """Build the torch side of a subject (the ONNX graph is exported lazily); NotApplicable if it cannot exist."""
    from kwsdeploy.exporters.onnx import FrontendOffline, FrontendStep
    from kwsdeploy.features import MFCC, frontend_macs_per_frame
    from kwsdeploy.models.macs import macs_per_clip
    from kwsdeploy.models.registry import count_params, get_card, kws_info
    from kwsdeploy.streaming.convert import to_streaming
    from kwsdeploy.streaming.costs import step_macs
    from kwsdeploy.streaming.pipeline import make_frontend

    if key.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {key.mode!r}.")
    card = get_card(key.model)
    model, labels, fc, weights = _loaded(card.name)
    n_mfcc = kws_info(model).n_mfcc
    per_frame = frontend_macs_per_frame(fc) if key.frontend else 0
    common = dict(card_name=card.name, weights=weights, labels=labels, feature_config=fc,
                  params=count_params(model), exporter=exporter,
                  input_kind="audio" if key.frontend else "features")
    if key.mode == "offline":
        if key.packet_frames not in (None, fc.clip_frames):
            raise NotApplicable(f"offline rows classify one {fc.clip_frames}-frame clip per call; no packet size")
        frames = fc.clip_frames
        module = FrontendOffline(MFCC(fc).eval(), model).eval() if key.frontend else model
        return Subject(key=key, module=module, init_state=lambda b: (), packet_frames=frames,
                       audio_seconds_per_call=samples_to_seconds(fc.clip_samples, fc),
                       macs_per_call=macs_per_clip(model, n_mfcc, frames=frames) + per_frame * frames,
                       frontend_macs_per_call=per_frame * frames, **common)
    if key.mode == "step" and card.streaming != "exact":
        raise NotApplicable(f"{card.name} has no exact step form (its card streams windowed)")
    if not fc.causal and not key.frontend:
        raise NotApplicable("reference-frontend models stream audio only: add --frontend")
    options = {}
    if key.packet_frames is not None or key.mode == "windowed":
        options["packet_frames"] = key.packet_frames or DEFAULT_WINDOW_HOP
    try:
        smodel = to_streaming(model, mode="exact" if key.mode == "step" else "windowed", feature_config=fc,
                              **options).eval()
    except ValueError as exc:
        raise NotApplicable(str(exc).split("\n")[0]) from None
    spec = smodel.stream_spec
    packet = int(spec.packet_frames)
    macs = step_macs(smodel) if key.mode == "step" else macs_per_clip(model, n_mfcc, frames=spec.window_frames)
    module, init = smodel, smodel.init_state
    if key.frontend:
        front = make_frontend(smodel)
        module = FrontendStep(front, smodel).eval()
        init = _joined_init(front, smodel)
    return Subject(key=key, module=module, init_state=init, packet_frames=packet,
                   audio_seconds_per_call=hop_seconds(packet, fc),
                   macs_per_call=int(macs) + per_frame * packet, frontend_macs_per_call=per_frame * packet,
                   **common)


def _joined_init(front, smodel) -> Callable[[int], tuple]:
    """The zero state of frontend + step model, in the order FrontendStep takes it."""
    return lambda batch: (*front.init_state(batch), *smodel.init_state(batch))


def _export(s: Subject):
    """(model graph, frontend graph or None) through the project's exporters (legacy path by default: fast)."""
    from kwsdeploy.exporters import onnx as ox
    from kwsdeploy.features import MFCC

    fc = s.feature_config
    if s.key.mode == "offline":
        model = s.module.model if s.key.frontend else s.module
        core = ox.export_offline(model, clip_frames=fc.clip_frames, clip_samples=fc.clip_samples, exporter=s.exporter)
        front = ox.export_frontend_offline(MFCC(fc).eval(), fc.clip_samples, exporter=s.exporter) if s.key.frontend else None
        return core, front
    smodel = s.module.smodel if s.key.frontend else s.module
    core = ox.export_step(smodel, exporter=s.exporter)
    front = ox.export_frontend_step(s.module.frontend, smodel.stream_spec, exporter=s.exporter) if s.key.frontend else None
    return core, front


def _packets(s: Subject, audio: np.ndarray, count: int) -> list[np.ndarray]:
    fc = s.feature_config
    hop = fc.hop_length
    if s.key.mode == "offline":
        n = fc.clip_samples
        clips = [np.resize(np.roll(audio, -i * n), n) for i in range(count)]
        if s.key.frontend:
            return [c[None].astype(np.float32) for c in clips]
        return [_features(c, fc)[None, None] for c in clips]  # [1, 1, n_mfcc, frames]
    per_call = s.packet_frames * hop
    need = per_call * count
    wave = np.resize(audio, need).astype(np.float32)
    if s.key.frontend:
        return [wave[None, i * per_call:(i + 1) * per_call] for i in range(count)]
    # The streaming frontend's frames == the offline MFCC of [zero cache + audio].
    cache = np.zeros(fc.n_fft - hop, dtype=np.float32)
    feats = _features(np.concatenate([cache, wave]), fc)
    p = s.packet_frames
    return [np.ascontiguousarray(feats[None, :, i * p:(i + 1) * p]) for i in range(count)]


def _features(wave: np.ndarray, fc) -> np.ndarray:
    from kwsdeploy.features import compute_features

    return compute_features(wave.astype(np.float32), fc).numpy()
