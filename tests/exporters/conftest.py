"""Fixtures for exporter tests: real clips (reference features and WAVs) for parity."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session")
def clip_features(reference_dir) -> np.ndarray:
    """MFCC features of 3 real spoken-digit clips, [3, 40, 98]."""
    return np.load(reference_dir / "features.npy")[:3]


@pytest.fixture(scope="session")
def clip_audio(reference_dir) -> np.ndarray:
    """3 real spoken-digit clips, 16 kHz float32 [3, 16000]."""
    wavs = sorted((reference_dir / "wavs").glob("*.wav"))[:3]
    return np.stack([sf.read(w, dtype="float32")[0] for w in wavs])
