"""`kwsdeploy check-trt` (static TensorRT parser compatibility of a bundle's graphs) and `kwsdeploy engine build`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from kwsdeploy.cli.common import UserError, user_errors


def register(app: typer.Typer) -> None:
    """Add `check-trt` and `engine build` to the CLI."""
    register_engine(app)

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


def trtexec_line(bundle: Path, precision: str, version: str, max_batch: int, opt_batch, workspace: int,
                 timing_cache, out) -> tuple[str, object]:
    """The trtexec command building the engine this command would build (and the plan it follows)."""
    from kwsdeploy.manifest import Manifest
    from kwsdeploy.trt import plan as tp

    manifest = Manifest.read(bundle)
    plan = tp.build_plan(manifest, precision, version)
    mf = next(f for f in manifest.files if f.path == plan.onnx)
    shapes = tp.profile_shapes(mf.inputs, max_batch, opt_batch)
    refuse_incompatible(bundle / plan.onnx, plan.version)
    engine = str(out) if out else str(bundle / tp.engine_file_name(precision, version))
    cache = str(timing_cache) if timing_cache else str(bundle / tp.TIMING_CACHE_NAME)
    argv = tp.trtexec_build_command(plan, shapes, str(bundle / plan.onnx), engine, cache, workspace)
    return tp.format_command(argv), plan


def refuse_incompatible(onnx_path: Path, version) -> None:
    """A UserError naming the first thing that TensorRT `version` would refuse in the graph."""
    from kwsdeploy.trt.compat import check_model

    result = check_model(onnx_path, [version])[0]
    if not result.ok:
        raise UserError(f"TensorRT {version} would refuse {onnx_path.name}: {result.findings[0].line()}; "
                        f"{len(result.findings)} problem(s), see 'kwsdeploy check-trt {onnx_path.parent} --trt {version}'.")


def register_engine(app: typer.Typer) -> None:
    """Add `engine build` to the CLI."""
    from kwsdeploy.cli._options import engine_batch_options, workspace_option
    from kwsdeploy.trt.plan import DEFAULT_WORKSPACE_MB

    batch_opts = engine_batch_options()
    engine = typer.Typer(help="TensorRT engines of a bundle's step graph.", no_args_is_help=True)
    app.add_typer(engine, name="engine")

    @engine.command("build")
    def build_cmd(
        bundle: Path = typer.Argument(..., help="Bundle directory written by 'kwsdeploy export'."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 (fp16 graph or FP16 flag) or int8 (Q/DQ graph)."),
        max_batch: int = batch_opts["max_batch"],
        opt_batch: Optional[int] = batch_opts["opt_batch"],
        workspace: int = workspace_option(DEFAULT_WORKSPACE_MB),
        timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file (read if present, then updated)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Engine file (default BUNDLE/model.<precision>.trt<version>.engine)."),
        trt: str = typer.Option("10.3", "--trt", help="Without TensorRT: the version the printed trtexec command targets."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing engine file."),
    ) -> None:
        """Build a TensorRT engine here, or, without TensorRT, print the trtexec command that builds it on the device."""
        from kwsdeploy.trt.builder import TensorRTMissing, build_engine, import_tensorrt

        with user_errors():
            try:
                import_tensorrt()
            except TensorRTMissing as exc:
                line, plan = trtexec_line(bundle, precision, trt, max_batch, opt_batch, workspace, timing_cache, out)
                typer.echo(line)
                for note in plan.notes:
                    typer.echo(f"note: {note}", err=True)
                typer.secho(f"error: {exc} Run the trtexec command above on the device (TensorRT {plan.version}).",
                            err=True, fg=typer.colors.RED)
                raise typer.Exit(2) from None
            from kwsdeploy.manifest import Manifest
            from kwsdeploy.trt.plan import build_plan
            from kwsdeploy.trt.versions import TrtVersion

            installed = TrtVersion.parse(import_tensorrt().__version__)
            refuse_incompatible(bundle / build_plan(Manifest.read(bundle), precision, installed).onnx, installed)
            result = build_engine(bundle, precision, max_batch, opt_batch, workspace, timing_cache, out,
                                  overwrite=overwrite)
            err, atol = engine_golden_parity(bundle, result)
            if not err <= atol:
                result.engine.unlink()
                raise UserError(f"{result.engine.name}: golden parity {err:.3g} exceeds {atol:g} "
                                f"({result.facts['precision']}); the engine was not kept.")
            from kwsdeploy.trt.record import record_engine

            record_engine(bundle, result.engine, result.facts, err, atol)
        f = result.facts
        typer.echo(f"{result.engine}: TensorRT {f['tensorrt']} {f['precision']} engine for {f['gpu']} "
                   f"(sm {f['compute_capability']}), {f['size'] / 1024:.0f} KiB, built in {f['build_seconds']:.1f} s, "
                   f"golden parity {err:.2e} (atol {atol:g})")


def engine_golden_parity(bundle: Path, result) -> tuple[float, float]:
    """Max |engine - torch| logits on the bundle's golden input (each clip streamed at batch 1), and the
    tolerance of the engine's precision."""
    import numpy as np

    from kwsdeploy.manifest import Manifest
    from kwsdeploy.precisions import get_precision
    from kwsdeploy.runtime.bundle import load_bundle
    from kwsdeploy.runtime.trt import TrtStepRunner
    from kwsdeploy.trt.record import engine_precision

    manifest = Manifest.read(bundle)
    source = next(f for f in manifest.files if f.path == result.plan.onnx)
    golden = load_bundle(bundle, check_hashes=False).golden()
    key = source.golden or f"{source.mode}.{source.input_kind}"
    x, expected = golden[f"{key}.input"], golden[f"{key}.logits"]
    runner = TrtStepRunner(result.engine, batch=1, cuda_graph=False)
    got = np.stack([runner.run(x[i:i + 1])[:, 0] for i in range(x.shape[0])], axis=1)
    runner.close()
    err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    atol = get_precision(engine_precision(result.facts, source.precision)).atol(source.input_kind == "audio")
    return err, atol
