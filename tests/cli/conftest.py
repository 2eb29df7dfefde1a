"""Shared CLI fixtures: the shipped tcresnet8-causal exported once per test process with its frontend."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kwsdeploy.cli.main import app


@pytest.fixture(scope="session")
def tcresnet8_frontend_bundle(tmp_path_factory):
    """`kwsdeploy export --model tcresnet8-causal --frontend --exporter legacy`: read-only for tests
    (copy it before changing its manifest)."""
    out = tmp_path_factory.mktemp("tc8-frontend") / "bundle"
    r = CliRunner().invoke(app, ["export", "--model", "tcresnet8-causal", "--frontend", "--out", str(out),
                                 "--exporter", "legacy"])
    assert r.exit_code == 0, r.output
    return out
