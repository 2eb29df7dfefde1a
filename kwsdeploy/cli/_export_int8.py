"""`kwsdeploy export --int8`: the fp32 (and fp16) bundle, INT8 graphs per target recipe calibrated on
real speech, and the accuracy report; written atomically like every bundle (nothing half-written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def eval_data_for(manifest, calib_data: Optional[Path], con):
    """The report's held-out data: the test split of a prepared --calib-data, else the demo corpus'."""
    from kwsdeploy.calibration.data import CalibrationError
    from kwsdeploy.calibration.report import held_out_data
    from kwsdeploy.cli.stream import _noise

    name = None
    if calib_data is not None and (Path(calib_data) / "labels.json").is_file():
        prepared = Path(calib_data)
    else:
        from kwsdeploy.data.demo import demo_corpus_dir

        prepared, name = Path(demo_corpus_dir()), "demo corpus"
    try:
        return held_out_data(prepared, manifest.labels, noise=_noise(prepared), name=name)
    except (CalibrationError, FileNotFoundError, ValueError) as exc:
        con.print(f"[yellow]no accuracy report: {exc}[/yellow]")
        return None


def detection_defaults():
    """The detection settings `stream`/`eval-stream` use."""
    from kwsdeploy.calibration.report import Detection
    from kwsdeploy.cli.stream import REFRACTORY_S, SMOOTHING_S, THRESHOLD

    return Detection(THRESHOLD, SMOOTHING_S, REFRACTORY_S)


def export_int8(out_dir: Path, overwrite: bool, inputs, options, build_kwargs: dict[str, Any], con):
    """build_bundle + the INT8 pass + the report, then write_bundle; returns the ExportResult."""
    import dataclasses

    from kwsdeploy.atomic import BUNDLE, check_output_dir
    from kwsdeploy.calibration.passes import apply_int8, calibration_clips
    from kwsdeploy.exporters.bundle import ExportResult, SummaryRow, build_bundle, write_bundle

    check_output_dir(Path(out_dir), BUNDLE, overwrite, inputs)
    clips = calibration_clips(options, build_kwargs["labels"], build_kwargs["feature_config"])
    manifest, blobs, rows = build_bundle(**{**build_kwargs, "fp16": True})  # fp16 is a row of the report
    with con.status("INT8: calibrating, quantizing, evaluating ...") as status:
        manifest, blobs, added, report = apply_int8(
            manifest, blobs, options, eval_data_for(manifest, options.calib_data, con), detection_defaults(),
            progress=lambda msg: status.update(f"INT8: {msg}"), clips=clips)
    for mf in added.files:
        rows.append(SummaryRow(mf.path, len(blobs[mf.path]), mf.opset, [t.name for t in mf.inputs],
                               [t.name for t in mf.outputs], mf.nodes, mf.parity_max_abs, mf.parity_atol, 0.0))
    for row in rows:
        row.size_bytes = len(blobs[row.file])
    path = write_bundle(out_dir, manifest, blobs, overwrite=overwrite, inputs=inputs)
    return dataclasses.replace(ExportResult(path=path, manifest=manifest, rows=rows)), report


def print_report(report, con) -> None:
    """The accuracy table per mode, as in report.md."""
    from rich.table import Table

    for mode, rep in (report or {}).items():
        table = Table(title=f"accuracy by precision ({mode}; {rep['data']})")
        for col in ("file", "recipe", "top-1", "macro F1", "agree fp32", "stream acc", "FA/h", "KiB", "vs fp32", "float layers"):
            table.add_column(col, justify="left" if col in ("file", "recipe") else "right", no_wrap=True)
        for r in rep["rows"]:
            s = r.get("stream", {})
            table.add_row(
                r["file"], r["recipe"] or "-", f"{r['top1']:.1%}", f"{r['macro_f1']:.3f}",
                f"{r['agreement_with_fp32']:.1%}", f"{s['accuracy']:.1%}" if s else "-",
                f"{s['false_alarms_per_hour']:.0f}" if s else "-", f"{r['bytes'] / 1024:.0f}", f"{r['size_vs_fp32']:.2f}x",
                str(len(r["float_layers"])) if r["precision"].startswith("int8") else "-")
        con.print(table)
