"""Shared test set-up: CPU only, one intra-op thread per worker, fixture paths."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"


def pytest_configure(config):
    try:  # CI draws the same hypothesis examples on every run (a red CI is reproducible); locally they vary
        import os

        from hypothesis import settings

        settings.register_profile("ci", derandomize=True)
        if os.environ.get("CI"):
            settings.load_profile("ci")
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the torch-free runtime test runs in a subprocess of its own
        pass


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def reference_manifest(reference_dir):
    import json

    return json.loads((reference_dir / "manifest.json").read_text())
