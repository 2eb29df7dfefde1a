"""Where a stream's logits come from, torch or a bundle, and the keyword events cut from them.

`TorchSource` streams a checkpoint's torch step form (exact or windowed), `BundleSource` an exported
bundle through a `StepRunner` (ONNX Runtime, or TensorRT when the bundle holds an engine for it).
Both give `labels`, `spec` (StreamSpec), `hop_seconds`, `logits(audio)` and `feeder()`; `detect`
and `detect_blocks` turn them into keyword events with `DetectionSettings` (`resolve_settings`:
explicit numbers, else the bundle's, else the defaults). Torch is imported only by a torch source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from kwsdeploy.contract import DEFAULT_DETECTION, WINDOW_HOP_FRAMES, DetectionSettings, StreamSpec

MIN_GAP_S = DEFAULT_DETECTION.min_gap_seconds


def detection_settings(threshold: float, smoothing: float, refractory: float, min_gap: float = MIN_GAP_S) -> DetectionSettings:
    """DetectionSettings from the four numbers of the command line."""
    return DetectionSettings(threshold=threshold, smoothing_seconds=smoothing, refractory_seconds=refractory,
                             min_gap_seconds=min_gap)


def resolve_settings(source, threshold: Optional[float], smoothing: Optional[float], refractory: Optional[float],
                     min_gap: Optional[float], temperature: Optional[float] = None) -> DetectionSettings:
    """Options given on the command line, else the bundle manifest's settings, else the defaults."""
    import dataclasses

    base = getattr(source, "detection", None) or DEFAULT_DETECTION
    given = {k: v for k, v in (("threshold", threshold), ("smoothing_seconds", smoothing),
                               ("refractory_seconds", refractory), ("min_gap_seconds", min_gap),
                               ("temperature", temperature)) if v is not None}
    if "threshold" in given:  # one threshold given on the command line: for every keyword
        given["keyword_thresholds"] = None
    return dataclasses.replace(base, tuned=None, **given) if given else base


class Source:
    """What `detect` needs from a source: labels, the stream spec, a description and a note."""

    labels: list[str]
    spec: StreamSpec
    describe: str
    note: str = ""

    @property
    def hop_seconds(self) -> float:
        """Seconds of audio per step call (one packet of frames)."""
        return self.spec.hop_seconds

    def logits(self, audio: np.ndarray) -> np.ndarray:
        """Logits [packets, classes] of a mono recording streamed from the zero state."""
        raise NotImplementedError

    def feeder(self):
        """A fresh incremental feeder (`feed(block) -> logits [packets, classes]`) from the zero state."""
        raise NotImplementedError


class TorchSource(Source):
    """Logits of a recording from a checkpoint's torch step form (exact or windowed)."""

    def __init__(self, checkpoint: Optional[Path], model: Optional[str], mode: Optional[str],
                 packet_frames: Optional[int]) -> None:
        from kwsdeploy.streaming.convert import to_streaming
        from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

        self.note = ""
        if checkpoint is None:
            if model is None:
                raise ValueError("Give --checkpoint CKPT, --bundle DIR or --model NAME (uses its shipped demo checkpoint).")
            checkpoint = demo_checkpoint_path(model)
            self.note = f"using the shipped demo checkpoint {checkpoint.name}"
        ck = load_checkpoint(checkpoint)
        from kwsdeploy.runtime.tuning import card_detection

        self.detection = card_detection(ck.card)  # tuned settings in the card, if any
        self.labels = ck.labels
        windowed = (mode or "") == "windowed" or not _is_exact(ck.model)
        if packet_frames is None and windowed:
            packet_frames = WINDOW_HOP_FRAMES
        options = {"packet_frames": packet_frames} if packet_frames else {}
        self.step = to_streaming(ck.model, mode=mode, feature_config=ck.feature_config, **options)
        self.spec = self.step.stream_spec
        self.describe = f"{ck.card['model']} ({self.spec.mode}, torch)"

    def logits(self, audio: np.ndarray) -> np.ndarray:
        """The torch stream pipeline (step frontend + step model) over the recording."""
        from kwsdeploy.streaming.pipeline import stream_logits

        return stream_logits(self.step, audio)[1]

    def feeder(self):
        from kwsdeploy.streaming.blocks import TorchFeeder

        return TorchFeeder(self.step)


def _is_exact(model) -> bool:
    """Whether the model's card streams in exact mode."""
    from kwsdeploy.models.registry import kws_info

    return kws_info(model).card.streaming == "exact"


class BundleSource(Source):
    """Logits of a recording from an exported bundle through a step runner (ONNX Runtime, or TensorRT
    when it is installed and the bundle holds an engine for it)."""

    def __init__(self, bundle: Path, backend: str = "auto") -> None:
        from kwsdeploy.runtime.runners import open_runner, resolve_backend

        backend = resolve_backend(bundle, backend)
        self.runner = open_runner(bundle, backend=backend)
        self.labels = self.runner.labels
        self.spec = self.runner.spec
        self.describe = f"{self.runner.manifest.model.get('name', '?')} ({self.spec.mode}, {backend})"
        from kwsdeploy.runtime.tuning import bundle_detection

        self.detection = bundle_detection(self.runner.manifest)

    def logits(self, audio: np.ndarray) -> np.ndarray:
        """Audio (a --frontend bundle) or offline MFCC of [zero cache + audio] through the step graph."""
        fc = self.spec.feature_config
        if self.runner.input_name == "audio":
            x = audio[None].astype(np.float32)
        else:  # features: the streaming frontend's frames == offline MFCC of [cache zeros + audio]
            import torch

            from kwsdeploy.features import MFCC

            if not fc.causal:
                raise ValueError("This bundle takes reference-frontend features; export it with --frontend to stream audio.")
            cache = np.zeros(fc.n_fft - fc.hop_length, dtype=np.float32)
            with torch.no_grad():
                x = MFCC(fc)(torch.from_numpy(np.concatenate([cache, audio]))[None]).numpy()
        return self.runner.run(x)[:, 0]

    def feeder(self):
        from kwsdeploy.streaming.blocks import RunnerFeeder

        return RunnerFeeder(self.runner)


def detect(source, audio: np.ndarray, threshold: float, smoothing: float, refractory: float,
           min_gap: float = MIN_GAP_S, settings=None):
    """Stream `audio` through `source` and return the keyword events (`settings` overrides the numbers)."""
    from kwsdeploy.runtime.detect import KeywordDetector

    settings = settings or detection_settings(threshold, smoothing, refractory, min_gap)
    det = KeywordDetector.from_settings(source.labels, source.hop_seconds, settings)
    return det.update(source.logits(audio)) if len(audio) else []


def detect_blocks(source, blocks, threshold: float = DEFAULT_DETECTION.threshold,
                  smoothing: float = DEFAULT_DETECTION.smoothing_seconds,
                  refractory: float = DEFAULT_DETECTION.refractory_seconds, min_gap: float = MIN_GAP_S, settings=None):
    """Stream audio blocks through `source`, yielding each keyword event as soon as it fires."""
    from kwsdeploy.runtime.detect import KeywordDetector

    settings = settings or detection_settings(threshold, smoothing, refractory, min_gap)
    det = KeywordDetector.from_settings(source.labels, source.hop_seconds, settings)
    feeder = source.feeder()
    for block in blocks:
        logits = feeder.feed(block)
        if len(logits):
            yield from det.update(logits)
