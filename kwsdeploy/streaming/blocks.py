"""Audio blocks of any length in, logits out: the incremental half of `stream` (memory stays flat).

A feeder keeps every state between calls (frontend sample cache, model state, the samples that do
not fill a packet yet), so feeding a recording block by block gives the logits of feeding it whole.
`TorchFeeder` runs a torch step form (with its step frontend); `RunnerFeeder` runs any `StepRunner`
(an audio-input graph takes the packets directly; a features graph gets them through the torch
streaming MFCC, whose frames equal the offline MFCC of [zero cache + audio]).
"""

from __future__ import annotations

import numpy as np


class TorchFeeder:
    """Feed audio blocks through a torch step model: `feed(block) -> logits [packets, classes]`."""

    def __init__(self, step_model) -> None:
        from kwsdeploy.streaming.pipeline import TorchStreamPipeline

        self.pipe = TorchStreamPipeline(step_model)
        self.num_classes = self.pipe.spec.num_classes

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Logits of the whole packets completed by `audio` (the rest waits for the next block)."""
        return self.pipe.process(np.asarray(audio, dtype=np.float32))[:, 0]


class RunnerFeeder:
    """Feed audio blocks through a `StepRunner` of batch 1: `feed(block) -> logits [packets, classes]`."""

    def __init__(self, runner) -> None:
        spec = runner.spec
        if spec is None:
            raise ValueError("this runner has no stream spec (an offline-only bundle): export it with --mode step.")
        fc = spec.feature_config
        self.runner = runner
        self.packet_samples = spec.packet_samples
        self.num_classes = spec.num_classes
        self.frontend = None
        if runner.input_name != "audio":
            if not fc.causal:
                raise ValueError("This bundle takes reference-frontend features; export it with --frontend to stream audio.")
            from kwsdeploy.streaming.frontend import StreamingMFCC

            self.frontend = StreamingMFCC(fc).eval()
            (self.cache,) = self.frontend.init_state(1)
        runner.reset()
        self.pending = np.zeros(0, dtype=np.float32)

    def _features(self, packet: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            frames, self.cache = self.frontend(torch.from_numpy(packet)[None], self.cache)
        return frames.numpy()

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Logits of the whole packets completed by `audio` (the rest waits for the next block)."""
        buf = np.concatenate([self.pending, np.asarray(audio, dtype=np.float32).reshape(-1)])
        ps = self.packet_samples
        n = len(buf) // ps
        out = np.empty((n, self.num_classes), dtype=np.float32)
        for i in range(n):
            packet = np.ascontiguousarray(buf[i * ps:(i + 1) * ps])
            x = self._features(packet) if self.frontend is not None else packet[None]
            out[i] = self.runner.step(x)[0]
        self.pending = buf[n * ps:].copy()
        return out
