"""The peers row: the same audio through microWakeWord's streaming models (`pymicro-wakeword`, an
optional extra), so the table shows kwsdeploy beside what users pick instead, measured in the same run."""

from __future__ import annotations

from typing import Any

import numpy as np

PEER_MODEL = "okay_nabu"
CHUNK_SAMPLES = 160  # 10 ms of 16 kHz audio per call, microWakeWord's own step


def rows(settings, audio: np.ndarray, machine, notes: list[str]) -> list[dict[str, Any]]:
    """One row per peer model (empty with a note when pymicro-wakeword is not installed)."""
    try:
        import pymicro_wakeword as pmw
    except ImportError:
        notes.append("peers row skipped: pymicro-wakeword is not installed (pip install 'kwsdeploy[peers]').")
        return []
    base = {"model": f"microWakeWord {PEER_MODEL}", "runtime": "pymicro-wakeword", "precision": "int8",
            "mode": "step", "batch": 1, "frontend": True, "device": "cpu", "threads": 1,
            "weights": "published model", "audio_ms_per_call": CHUNK_SAMPLES / 16.0}
    try:
        model = pmw.MicroWakeWord.from_builtin(pmw.Model[PEER_MODEL.upper()])
        features = pmw.MicroWakeWordFeatures()
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        chunk = 2 * CHUNK_SAMPLES
        chunks = [pcm[i:i + chunk] for i in range(0, len(pcm) - chunk + 1, chunk)]

        def call(i: int) -> None:
            for f in features.process_streaming(chunks[i % len(chunks)]):
                model.process_streaming(f)

        from kwsdeploy.bench.timing import time_calls

        t = time_calls(call, settings.calls, settings.warmup, settings.max_seconds)
        st = t.stats()
        audio_s = CHUNK_SAMPLES / 16000
        cpu_s = t.cpu_ns * 1e-9
        streamed = audio_s * st["calls"]
        return [{**base, **st, "packet_frames": 1, "status": "ok", "reason": "",
                 "cpu_ms_per_s": cpu_s * 1e3 / streamed, "rtf": st["mean_us"] * 1e-6 / audio_s,
                 "streams_per_core": streamed / cpu_s if cpu_s > 0 else None,
                 "version": _version()}]
    except Exception as exc:  # noqa: BLE001 - a broken peer is a row with its reason
        return [{**base, "status": "failed", "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}]


def _version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("pymicro-wakeword")
    except importlib.metadata.PackageNotFoundError:
        return None


