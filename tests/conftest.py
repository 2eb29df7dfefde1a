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


@pytest.fixture(scope="session")
def tiny_steps():
    """tests/exporters/tiny_steps.py as a module: the tiny step models and `export_tiny`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_steps", Path(__file__).parent / "exporters" / "tiny_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
