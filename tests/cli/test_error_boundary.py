"""The CLI's one error boundary: any exception is one line with exit status 2; --debug shows the traceback."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

import kwsdeploy.cli.models as models_cli
from kwsdeploy.cli.common import describe
from kwsdeploy.cli.main import app

runner = CliRunner()


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("exc, says", [
    (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero (unexpected: rerun with --debug"),
    (RuntimeError("shape mismatch\nmore detail"), "RuntimeError: shape mismatch (unexpected"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/y"), "no space left on the device (/x/y)"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro"), "permission denied (/ro)"),
    (OSError(errno.EROFS, "Read-only file system", "/ro"), "read-only file system (/ro)"),
    (MemoryError(), "out of memory"),
    (TypeError("unsupported operand"), "TypeError: unsupported operand"),
])
def test_any_exception_is_one_line_with_exit_2(monkeypatch, exc, says):
    monkeypatch.setattr(models_cli, "model_rows", _raise(exc))
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and says in r.output
    assert r.output.strip().count("\n") == 0 and "Traceback" not in r.output


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(models_cli, "model_rows", _raise(ZeroDivisionError("boom")))
    r = runner.invoke(app, ["--debug", "models"])
    assert isinstance(r.exception, ZeroDivisionError)
    r = runner.invoke(app, ["models"])  # the flag does not stick
    assert r.exit_code == 2 and "boom" in r.output


def test_an_interrupt_says_nothing_was_half_written(monkeypatch):
    monkeypatch.setattr(models_cli, "model_rows", _raise(KeyboardInterrupt()))
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 130 and "interrupted" in r.output


def test_usage_errors_keep_exit_2_and_clicks_message():
    r = runner.invoke(app, ["models", "--nope"])
    assert r.exit_code == 2 and "No such option" in r.output


def test_an_onnxruntime_error_says_what_to_do():
    cls = type("InvalidProtobuf", (Exception,), {"__module__": "onnxruntime.capi.onnxruntime_pybind11_state"})
    assert "re-export the bundle" in describe(cls("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : bad"))
