"""Fixtures for the TensorRT tests: real clip features and a tiny exported step bundle."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def clip_features(reference_dir) -> np.ndarray:
    """MFCC features of 3 real spoken-digit clips, [3, 40, 98]."""
    return np.load(reference_dir / "features.npy")[:3]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, clip_features, tiny_steps):
    """A small exported step bundle (tiny exact step form, random seeded weights)."""
    return tiny_steps.export_tiny(tmp_path_factory.mktemp("tiny") / "b", clip_features[:, :, :8],
                                  [f"w{i}" for i in range(12)])[1]
