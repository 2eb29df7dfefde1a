"""`kwsdeploy export`: a checkpoint (or the shipped demo checkpoint) to a parity-checked ONNX bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

def _names(names: list[str]) -> str:
    """'audio + 9 state' rather than every state name (the manifest lists them all)."""
    main = [n for n in names if not n.startswith(("state.", "new_state."))]
    n_state = len(names) - len(main)
    return ", ".join(main) + (f" + {n_state} state" if n_state else "")


def print_summary(result, console) -> None:
    """The export summary table: one row per file."""
    from rich.table import Table

    table = Table(title=f"kwsdeploy export -> {result.path}")
    for col in ("file", "size", "opset", "inputs", "outputs", "nodes", "parity max|d| (atol)", "time"):
        table.add_column(col, justify="right" if col in ("size", "opset", "nodes", "time") else "left", no_wrap=True)
    for r in result.rows:
        table.add_row(
            r.file, f"{r.size_bytes / 1024:.0f} KiB", str(r.opset), _names(r.inputs), _names(r.outputs),
            str(r.nodes), f"{r.parity_max_abs:.1e} ({r.parity_atol:g})", f"{r.seconds:.1f} s",
        )
    console.print(table)
    m = result.manifest
    spec = f"packet {m.stream.packet_frames} frames, delay {m.stream.delay_frames}, {len(m.stream.states)} states; " if m.stream else ""
    console.print(f"{spec}parity on: {m.parity_data}; total {m.export_seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add `export` to the CLI."""
    from kwsdeploy.cli import _options as opt

    @app.command("export")
    def export_cmd(
        model: str = typer.Option(..., "--model", "-m", help="Registry name (see 'kwsdeploy models')."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint dir; default: the shipped demo checkpoint."),
        mode: str = typer.Option("step", "--mode", help="step, offline or both."),
        frontend: bool = typer.Option(False, "--frontend", help="Put the streaming MFCC (and its sample cache) inside the graph: input 'audio'."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write an fp16 graph (fp32 inputs/outputs)."),
        int8: bool = typer.Option(False, "--int8", help="Also write INT8 graphs calibrated on real speech, and report.md."),
        calib_data: Optional[Path] = typer.Option(
            None, "--calib-data", help="Calibration clips: a prepared dir (train split) or a folder of label-named "
                                       "subfolders; default: the embedded demo corpus' train split."),
        calib_clips: Optional[int] = typer.Option(
            None, "--calib-clips", help="Clips joined into the calibration streams (default 64, or the checkpoint's preset)."),
        calib_method: Optional[str] = typer.Option(
            None, "--calib-method", help="minmax, percentile or entropy (default minmax, or the checkpoint's preset)."),
        calib_percentile: Optional[float] = typer.Option(
            None, "--calib-percentile", help="With --calib-method percentile: the share of each range kept (99.999)."),
        keep_float: Optional[str] = typer.Option(
            None, "--keep-float", help="INT8: layers kept float, comma list of node names, 'first' (input layer), "
                                       "'last' (classifier), 'first:N' / 'last:N' (N from that end), '#N' (the N-th "
                                       "quantizable layer); '' for none."),
        target: str = typer.Option("both", "--target", help="INT8 recipe: tensorrt, cpu or both."),
        eval_data: Optional[Path] = typer.Option(
            None, "--eval-data", help="With --int8: the report's held-out clips, a prepared dir (its --eval-split); "
                                      "default: the test split of a prepared --calib-data, else the demo corpus'."),
        eval_split: str = typer.Option("test", "--eval-split", help="With --int8: the report's split (train, valid, test)."),
        eval_stream_clips: int = typer.Option(
            40, "--eval-stream-clips", help="Held-out clips joined into the report's stream recording (0: all)."),
        quantize_state: bool = typer.Option(
            False, "--quantize-state", help="tensorrt recipe: also Q/DQ the SSM state (Keyword Mamba) at the step's boundary."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory (default exports/<model>)."),
        hop_frames: Optional[int] = opt.PACKET_FRAMES,
        random_init: bool = typer.Option(False, "--random-init", help="Random weights instead of a checkpoint (testing)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle directory."),
        exporter: str = opt.exporter_option("auto"),
    ) -> None:
        """Export a model's step (and/or offline) graph to a bundle, checked against torch on real clips."""
        from kwsdeploy.cli.common import console, user_errors

        con = console()
        con.width = max(con.width, 140)
        with user_errors():
            int8_options = _int8_options(target, calib_data, calib_clips, calib_method, quantize_state, eval_data,
                                         eval_split, eval_stream_clips, calib_percentile, keep_float) if int8 else None
            if quantize_state and not int8:
                raise ValueError("--quantize-state needs --int8.")
            if eval_data is not None and not int8:
                raise ValueError("--eval-data needs --int8 (the report it feeds).")
            modes = _modes(mode)
            from kwsdeploy.cli.common import UserError
            from kwsdeploy.exporters.bundle import ParityError, export_bundle
            from kwsdeploy.exporters.inputs import card_detection_of, load_export_model, parity_clips
            from kwsdeploy.exporters.onnx import ExportError
            from kwsdeploy.models.registry import kws_info

            m, labels, fcfg, info, accuracy, msg = load_export_model(model, checkpoint, random_init)
            detection = None if random_init else card_detection_of(model, checkpoint)
            con.print(msg)
            out_dir = out or Path("exports") / kws_info(m).name
            inputs = [("--checkpoint", checkpoint), ("--calib-data", calib_data), ("--eval-data", eval_data)]
            build = dict(model=m, labels=labels, feature_config=fcfg, parity=parity_clips(fcfg), modes=modes,
                         frontend=frontend, precisions=("fp32", "fp16") if fp16 else ("fp32",), hop_frames=hop_frames,
                         checkpoint=info, accuracy=accuracy, exporter=exporter, detection=detection)
            report = None
            try:
                if int8_options is not None:
                    from kwsdeploy.cli._export_int8 import export_int8

                    result, report = export_int8(out_dir, overwrite, inputs, int8_options, build, con)
                else:
                    result = export_bundle(out_dir, overwrite=overwrite, inputs=inputs, **build)
            except (ParityError, ExportError) as exc:
                raise UserError(str(exc)) from None
        print_summary(result, con)
        if report:
            from kwsdeploy.cli._export_int8 import print_report

            print_report(report, con)
        print_trt_check(result.path, con)


def _modes(mode: str) -> tuple[str, ...]:
    modes = {"step": ("step",), "offline": ("offline",), "both": ("step", "offline")}.get(mode)
    if modes is None:
        raise ValueError(f"--mode must be step, offline or both, got {mode!r}.")
    return modes


def _int8_options(target: str, calib_data: Optional[Path], calib_clips: Optional[int], calib_method: Optional[str],
                  quantize_state: bool, eval_data: Optional[Path], eval_split: str, eval_stream_clips: int,
                  percentile: Optional[float], keep_float: Optional[str]):
    """Int8Options from the flags; the ones not given stay defaults, listed as not explicit (a
    checkpoint's preset may fill them, `calibration.presets`)."""
    from kwsdeploy.calibration.passes import Int8Options, parse_targets

    given = {"clips": calib_clips, "method": calib_method, "percentile": percentile,
             "keep_float": None if keep_float is None else tuple(x.strip() for x in keep_float.split(",") if x.strip())}
    given = {k: v for k, v in given.items() if v is not None}
    return Int8Options(parse_targets(target), calib_data, quantize_state=quantize_state, eval_data=eval_data,
                       eval_split=eval_split, eval_stream_clips=eval_stream_clips, explicit=tuple(sorted(given)), **given)


def print_trt_check(bundle_dir: Path, console) -> None:
    """The TensorRT parser check of every exported graph for the oldest target (a warning, not an error)."""
    from kwsdeploy.trt.compat import check_path
    from kwsdeploy.trt.versions import DEFAULT_CHECK

    for r in check_path(bundle_dir, [DEFAULT_CHECK]):
        if r.ok:
            console.print(f"TensorRT {r.version} parser check: {r.file} OK")
            continue
        console.print(f"[yellow]warning: TensorRT {r.version} would refuse {r.file}:[/yellow]", highlight=False)
        for f in r.findings:
            console.print(f"  {f.line()}", highlight=False, markup=False)
