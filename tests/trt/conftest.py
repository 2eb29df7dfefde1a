"""Fixtures for the TensorRT tests: real clip features, the tiny step modules of the exporter tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("tiny_steps", Path(__file__).parents[1] / "exporters" / "tiny_steps.py")
tiny_steps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_steps)


@pytest.fixture(scope="session")
def clip_features(reference_dir) -> np.ndarray:
    """MFCC features of 3 real spoken-digit clips, [3, 40, 98]."""
    return np.load(reference_dir / "features.npy")[:3]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, clip_features):
    """A small exported step bundle (tiny exact step form, random seeded weights)."""
    from kwsdeploy.exporters.bundle import ParityData, export_bundle

    step = tiny_steps.seeded(tiny_steps.TinyCausalStep())
    res = export_bundle(tmp_path_factory.mktemp("tiny") / "b", model=tiny_steps.seeded(tiny_steps.TinyOffline()),
                        labels=[f"w{i}" for i in range(12)], feature_config=step.stream_spec.feature_config,
                        smodel=step, exporter="legacy", parity=ParityData(features=clip_features[:, :, :8]))
    return res.path
