"""The `kwsdeploy` command: a typer app assembled from one module per command group.

Each module in `kwsdeploy.cli` (other than this one and `common`) defines `register(app)`, which
adds its commands; modules are discovered, so adding a command group is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Optional

import typer

import kwsdeploy

app = typer.Typer(
    name="kwsdeploy",
    help="Keyword-spotting models from training to small devices: stream, export, quantise, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kwsdeploy {kwsdeploy.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    threads: int = typer.Option(
        1, "--threads", min=1, help="CPU threads for torch and ONNX Runtime in the command (default 1).",
    ),
) -> None:
    """kwsdeploy: what does it cost to hear one more 10 ms of audio, and what did we lose to get there?"""
    from kwsdeploy.threads import set_default_threads

    set_default_threads(threads)


def _register_all() -> None:
    import kwsdeploy.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in ("main", "common") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"kwsdeploy.cli.{info.name}")
        module.register(app)


_register_all()


def main() -> None:
    """Console entry point: known errors print one line and exit 1; no tracebacks for user errors."""
    from kwsdeploy.cli.common import UserError

    try:
        app(standalone_mode=True)
    except UserError as exc:  # raised by commands for bad input
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
