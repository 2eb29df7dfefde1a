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
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error instead of one line."),
) -> None:
    """kwsdeploy: what does it cost to hear one more 10 ms of audio, and what did we lose to get there?"""
    from kwsdeploy.cli.common import DEBUG
    from kwsdeploy.threads import set_default_threads

    DEBUG["on"] = debug
    set_default_threads(threads)


def _register_all() -> None:
    import kwsdeploy.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in ("main", "common") or info.name.startswith("_"):  # helpers, not command groups
            continue
        module = importlib.import_module(f"kwsdeploy.cli.{info.name}")
        module.register(app)
    from kwsdeploy.cli.common import guard_app

    guard_app(app)


_register_all()


def main() -> None:
    """Console entry point: every error is one line with exit status 2 (see `kwsdeploy.cli.common`)."""
    from kwsdeploy.cli.common import EXIT_USER, describe, debug_on

    try:
        app(standalone_mode=True)
    except Exception as exc:  # outside any command (e.g. while building the app)
        if debug_on():
            raise
        typer.secho(f"error: {describe(exc)}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_USER)


if __name__ == "__main__":
    main()
