"""`kwsdeploy check-trt` (static TensorRT parser compatibility of a bundle's graphs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from kwsdeploy.cli.common import user_errors


def register(app: typer.Typer) -> None:
    """Add `check-trt` to the CLI."""

    @app.command("check-trt")
    def check_trt_cmd(
        target: Path = typer.Argument(..., help="Bundle directory (every ONNX graph it lists) or one MODEL.onnx."),
        trt: Optional[List[str]] = typer.Option(
            None, "--trt", help="TensorRT version(s) to check against: 10.3 (JetPack 6), 10.16 (JetPack 7.2), 11; "
                                "repeatable (default 10.3, the oldest target)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Would TensorRT's ONNX parser (and our engine builder) accept these graphs? Exit 1 when not."""
        from kwsdeploy.trt.compat import check_path
        from kwsdeploy.trt.versions import DEFAULT_CHECK

        with user_errors():
            results = check_path(target, trt or [DEFAULT_CHECK])
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in results], indent=1))
        else:
            for r in results:
                typer.echo(r.summary())
                for f in r.findings:
                    typer.echo(f"  {f.line()}")
        if not all(r.ok for r in results):
            raise typer.Exit(1)
