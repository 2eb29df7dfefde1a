"""The peers row: the same audio through microWakeWord's streaming models (`pymicro-wakeword`, an
optional extra), so the table shows kwsdeploy beside what users pick instead, timed in the same
interleaved rounds as every other row."""

from __future__ import annotations

from typing import Any

import numpy as np

PEER_MODEL = "okay_nabu"
CHUNK_SAMPLES = 160  # 10 ms of 16 kHz audio per call, microWakeWord's own step


class PeerRunner:
    """`step(i)`: feed the i-th 10 ms chunk of the shared audio through the peer's features and model."""

    def __init__(self, audio: np.ndarray) -> None:
        import pymicro_wakeword as pmw

        self.model = pmw.MicroWakeWord.from_builtin(pmw.Model[PEER_MODEL.upper()])
        self.features = pmw.MicroWakeWordFeatures()
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        size = 2 * CHUNK_SAMPLES
        self._chunks = [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, size)]
        self.chunks = len(self._chunks)
        self.audio_s_per_call = CHUNK_SAMPLES / 16000

    def step(self, i: int) -> None:
        for f in self.features.process_streaming(self._chunks[i % self.chunks]):
            self.model.process_streaming(f)


def prepare(audio: np.ndarray, notes: list[str]) -> list[tuple[dict[str, Any], PeerRunner | None]]:
    """(row, runner) per peer model; nothing (and a note) when pymicro-wakeword is not installed."""
    import importlib.util

    if importlib.util.find_spec("pymicro_wakeword") is None:
        notes.append("peers row skipped: pymicro-wakeword is not installed (pip install 'kwsdeploy[peers]').")
        return []
    row = {"model": f"microWakeWord {PEER_MODEL}", "runtime": "pymicro-wakeword", "precision": "int8",
           "mode": "step", "packet_frames": 1, "batch": 1, "frontend": True, "device": "cpu", "threads": 1,
           "weights": "published model", "audio_ms_per_call": CHUNK_SAMPLES / 16.0, "version": _version()}
    try:
        peer = PeerRunner(audio)
    except Exception as exc:  # noqa: BLE001 - a broken peer is a row with its reason
        return [({**row, "status": "failed", "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}, None)]
    return [({**row, "status": "ok", "reason": ""}, peer)]


def _version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("pymicro-wakeword")
    except importlib.metadata.PackageNotFoundError:
        return None
