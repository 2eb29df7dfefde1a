"""`kwsdeploy verify DIR`: schema version, file hashes, ONNX metadata and golden parity of a bundle.

Torch-free (numpy + onnxruntime), so it runs on the device the bundle was copied to.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `verify` to the CLI."""

    @app.command("verify")
    def verify_cmd(
        bundle: Path = typer.Argument(..., help="A bundle directory written by 'kwsdeploy export'."),
        provider: Optional[List[str]] = typer.Option(
            None, "--provider", help="ONNX Runtime provider(s) to verify on (default CPUExecutionProvider)."
        ),
    ) -> None:
        """Check a bundle: schema, sha256 of every file, ONNX metadata, and parity on its golden inputs."""
        from kwsdeploy.cli.common import user_errors

        with user_errors():
            from kwsdeploy.runtime.bundle import load_bundle
            from kwsdeploy.runtime.verify import verify_bundle

            checks = verify_bundle(bundle, providers=provider or None)
            manifest = load_bundle(bundle, check_hashes=False).manifest
        for c in checks:
            what = f"{c.steps} steps" if c.steps > 1 else "offline"
            typer.echo(f"ok {c.path}: golden parity {c.max_abs:.2e} <= {c.atol:g} ({what})")
        typer.echo(
            f"bundle OK: {manifest.model.get('name', '?')}, schema {manifest.schema_version}, "
            f"{len(manifest.hashes)} files hashed, {len(checks)} graph(s) verified"
        )
