"""The torch streaming chain: waveform packets -> StreamingMFCC -> step model -> logits per packet.

`TorchStreamPipeline` keeps every state explicitly (frontend sample cache + model state) and takes
audio of any length: whole packets are processed, the remainder waits for the next call. Logits of
call-packet n describe the audio up to sample (n + 1) * packet_samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kwsdeploy.streaming.frontend import StreamingLogMel, StreamingMFCC


def make_frontend(step_model: nn.Module) -> nn.Module:
    """The step frontend that feeds `step_model`: MFCC frames, or dB mel for the reference frontend."""
    config = step_model.stream_spec.feature_config
    return (StreamingMFCC(config) if config.causal else StreamingLogMel(config)).eval()


class TorchStreamPipeline:
    """Waveform-in, logits-out streaming with the torch step form (the reference for the ONNX runner)."""

    def __init__(self, step_model: nn.Module, batch: int = 1) -> None:
        self.model = step_model.eval()
        self.spec = step_model.stream_spec
        self.frontend = make_frontend(step_model)
        self.packet_samples = self.spec.packet_samples
        self.batch = batch
        self.reset()

    @property
    def hop_seconds(self) -> float:
        """Seconds of audio per step call."""
        return self.spec.hop_seconds

    def reset(self) -> None:
        """Back to the zero state (frontend cache, model state, pending samples)."""
        (self.cache,) = self.frontend.init_state(self.batch)
        self.state = self.model.init_state(self.batch)
        self.pending = np.zeros((self.batch, 0), dtype=np.float32)

    @torch.no_grad()
    def process(self, audio: np.ndarray) -> np.ndarray:
        """Feed audio [samples] or [B, samples]; returns logits [packets, B, classes] (maybe 0 packets)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.shape[0] != self.batch:
            raise ValueError(
                f"Audio batch {audio.shape[0]} does not match the pipeline's batch {self.batch}; "
                f"pass [{self.batch}, samples] or build the pipeline with batch={audio.shape[0]}."
            )
        buf = np.concatenate([self.pending, audio], axis=1)
        n = buf.shape[1] // self.packet_samples
        out = []
        for i in range(n):
            packet = torch.from_numpy(buf[:, i * self.packet_samples : (i + 1) * self.packet_samples])
            feats, self.cache = self.frontend(packet, self.cache)
            logits, *state = self.model(feats, *self.state)
            self.state = tuple(state)
            out.append(logits.numpy())
        self.pending = buf[:, n * self.packet_samples :]
        if not out:
            return np.zeros((0, self.batch, self.spec.num_classes), dtype=np.float32)
        return np.stack(out)


def stream_logits(step_model: nn.Module, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stream a whole mono recording; returns (end time in seconds of each packet, logits [packets, C])."""
    pipe = TorchStreamPipeline(step_model)
    logits = pipe.process(audio)[:, 0]
    times = (np.arange(len(logits)) + 1) * pipe.hop_seconds
    return times, logits
