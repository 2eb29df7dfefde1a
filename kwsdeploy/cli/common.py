"""Helpers shared by the CLI modules: one-line user errors and console output."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer


class UserError(Exception):
    """Bad input from the user: printed as one line ('error: ...') with exit status 1."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's known input errors into one-line CLI errors (exit 1, no traceback)."""
    try:
        yield
    except (UserError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


def console():
    from rich.console import Console

    return Console()
