"""`kwsdeploy bundle` (a Jetson device bundle: .tar.gz with run.py, build_engine.sh, bench.sh) and
`kwsdeploy bundle --verify FILE.tar.gz`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli.common import UserError, user_errors


def register(app: typer.Typer) -> None:
    """Add `bundle` to the CLI."""

    @app.command("bundle")
    def bundle_cmd(
        bundle: Optional[Path] = typer.Argument(None, help="Export bundle directory (exported with --frontend)."),
        target: str = typer.Option("jetson", "--target", help="Device family (jetson)."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or int8 (the engine build_engine.sh makes)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="FILE.tar.gz (default <model>-jetson-<precision>.tar.gz)."),
        verify: Optional[Path] = typer.Option(None, "--verify", help="Verify a device bundle FILE.tar.gz instead."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Pack a bundle for a device (graphs, manifest, checksums, run.py, build_engine.sh, bench.sh, README),
        or verify one (checksums, manifest, TensorRT parser check, run.py on the golden input)."""
        from kwsdeploy.exporters import jetson

        with user_errors():
            try:
                if verify is not None:
                    if bundle is not None:
                        raise UserError("--verify FILE.tar.gz takes no bundle directory; pass one or the other.")
                    report = jetson.verify_tarball(verify)
                else:
                    if bundle is None:
                        raise UserError("give the export bundle directory to pack (or --verify FILE.tar.gz).")
                    if target != jetson.TARGET:
                        raise UserError(f"--target must be {jetson.TARGET!r}, got {target!r}.")
                    from kwsdeploy.manifest import Manifest

                    name = Manifest.read(bundle).model.get("name", bundle.name)
                    out_path = out or Path(f"{name}-{target}-{precision}.tar.gz")
                    device = jetson.write_device_bundle(bundle, out_path, precision, overwrite)
            except jetson.DeviceBundleError as exc:
                raise UserError(str(exc)) from None
        if verify is not None:
            if as_json:
                typer.echo(json.dumps({"file": str(verify), "top": report.top, "files": report.files,
                                       "golden": report.golden, "tensorrt": [r.to_dict() for r in report.compat]}, indent=1))
                return
            g = report.golden
            typer.echo(f"{verify.name}: {report.files} files, checksums and manifest hashes OK")
            for r in report.compat:
                typer.echo(f"  {r.summary()}")
            typer.echo(f"  run.py --golden ({g['backend']}): max |logits - golden| {g['max_abs']:.2e} "
                       f"(atol {g['atol']:g}) over {g['clips']} clips x {g['steps']} steps: OK")
            return
        size = out_path.stat().st_size
        if as_json:
            typer.echo(json.dumps({"file": str(out_path), "top": device.top, "precision": precision, "bytes": size,
                                   "files": sorted(device.files)}, indent=1))
            return
        typer.echo(f"{out_path}: {device.top}/ ({len(device.files)} files, {size / 1024:.0f} KiB)")
        for r in device.compat:
            typer.echo(f"  {r.summary()}")
        for dialect, plan in device.plans.items():
            if isinstance(plan, str):
                typer.echo(f"  note: build_engine.sh cannot build {precision} on the {dialect} dialect: {plan}")
