"""Helpers shared by the CLI modules: the error boundary (one line, exit 2) and console output.

Every command runs inside `guard`: any exception becomes one line on stderr that says what went
wrong and what to do, with exit status 2 (`kwsdeploy --debug ...` or KWSDEPLOY_DEBUG=1 shows the
traceback instead). Usage errors of the option parser keep click's own message and status 2.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from typing import Any, Callable, Iterator

import typer

EXIT_USER = 2  # bad input, refused output, anything a user can fix
EXIT_INTERRUPTED = 130
DEBUG = {"on": False}  # set by the root --debug option


class UserError(Exception):
    """Bad input from the user: printed as one line ('error: ...') with exit status 2."""


def debug_on() -> bool:
    return DEBUG["on"] or os.environ.get("KWSDEPLOY_DEBUG", "") not in ("", "0")


def _first_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = str(text).strip()
    return text.splitlines()[0] if text else ""


def describe(exc: BaseException) -> str:
    """One line for any exception: the message, and for unexpected ones what to do next."""
    if isinstance(exc, (UserError, ValueError, KeyError, FileNotFoundError, FileExistsError)) and _first_line(exc):
        return _first_line(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on the device{where}: free some space or write elsewhere; no half-written output was kept."
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied{where}: choose a path you can write to, or fix its permissions."
        if exc.errno == errno.EROFS:
            return f"read-only file system{where}: write the output somewhere writable."
        return f"{exc.strerror or type(exc).__name__}{where}: check the path and try again."
    if isinstance(exc, MemoryError):
        return "out of memory: use smaller inputs or settings (e.g. fewer clips, a smaller --batch-size)."
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if "onnxruntime" in module or name in ("InvalidProtobuf", "InvalidGraph", "Fail", "RuntimeException"):
        return (f"ONNX Runtime could not use the model ({name}: {_first_line(exc)}): re-export the bundle, "
                "or run 'kwsdeploy verify' on it.")
    msg = _first_line(exc)
    return (f"{name}{': ' + msg if msg else ''} (unexpected: rerun with --debug for the traceback; if the input is "
            "right, this is a kwsdeploy bug worth reporting).")


def _passes_through(exc: BaseException) -> bool:
    """typer/click's own control flow (exit, abort, usage errors) is theirs to print."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"Exit", "Abort", "ClickException"})


def fail(exc: BaseException) -> None:
    """Print `exc` as one line and exit 2 (or re-raise it under --debug)."""
    if debug_on():
        raise exc
    typer.secho(f"error: {describe(exc)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(EXIT_USER) from None


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command callback in the error boundary (the signature typer reads is kept)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if debug_on():
                raise
            typer.secho("interrupted: outputs are written atomically, so nothing half-written was left; "
                        "run the command again (training: add --resume).", err=True, fg=typer.colors.RED)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _passes_through(exc):
                raise
            fail(exc)

    run.__kwsdeploy_guarded__ = True
    return run


def guard_app(app: typer.Typer) -> None:
    """Put every command of `app` and of its sub-apps inside `guard` (once)."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__kwsdeploy_guarded__", False):
            info.callback = guard(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_app(group.typer_instance)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's known input errors into one-line CLI errors (exit 2, no traceback)."""
    try:
        yield
    except (UserError, FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        fail(exc)


def console():
    from rich.console import Console

    return Console()
