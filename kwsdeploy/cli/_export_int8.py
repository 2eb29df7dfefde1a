"""`kwsdeploy export --int8`: the fp32 (and fp16) bundle, INT8 graphs per target recipe calibrated on
real speech, and the accuracy report; written atomically like every bundle (nothing half-written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def eval_data_for(manifest, calib_data: Optional[Path], con):
    """The report's held-out data: the test split of a prepared --calib-data, else the demo corpus'."""
    from kwsdeploy.calibration.data import CalibrationError
    from kwsdeploy.calibration.report import held_out_data
    from kwsdeploy.data.noise import background_noise

    name = None
    if calib_data is not None and (Path(calib_data) / "labels.json").is_file():
        prepared = Path(calib_data)
    else:
        from kwsdeploy.data.demo import demo_corpus_dir

        prepared, name = Path(demo_corpus_dir()), "demo corpus"
    try:
        return held_out_data(prepared, manifest.labels, noise=background_noise(prepared), name=name)
    except (CalibrationError, FileNotFoundError, ValueError) as exc:
        con.print(f"[yellow]no accuracy report: {exc}[/yellow]")
        return None


def export_int8(out_dir: Path, overwrite: bool, inputs, options, build_kwargs: dict[str, Any], con):
    """build_bundle with fp32, fp16 and the INT8 precisions of `options` (calibrated on real speech),
    then the accuracy report, then write_bundle; returns (ExportResult, report)."""
    from kwsdeploy.atomic import BUNDLE, check_output_dir
    from kwsdeploy.calibration.passes import PRECISION_OF_TARGET, CalibrationSource, add_report, calibration_clips
    from kwsdeploy.exporters.bundle import ExportResult, build_bundle, write_bundle

    check_output_dir(Path(out_dir), BUNDLE, overwrite, inputs)
    fc = build_kwargs["feature_config"]
    clips = calibration_clips(options, build_kwargs["labels"], fc)  # refusals before any export work
    precisions = ("fp32", "fp16", *(PRECISION_OF_TARGET[t] for t in options.targets))  # fp16: a report row
    with con.status("INT8: exporting ...") as status:
        source = CalibrationSource(clips, fc, options.method, options.quantize_state,
                                   progress=lambda msg: status.update(f"INT8: {msg}"))
        manifest, blobs, rows = build_bundle(**{**build_kwargs, "precisions": precisions}, calibration_data=source)
        report = None
        data = eval_data_for(manifest, options.calib_data, con)
        if data is not None:
            status.update(f"INT8: accuracy report on {data.source}")
            manifest, blobs, report = add_report(manifest, blobs, data, manifest.detection_settings)
    path = write_bundle(out_dir, manifest, blobs, overwrite=overwrite, inputs=inputs)
    return ExportResult(path=path, manifest=manifest, rows=rows), report


def print_report(report, con) -> None:
    """The accuracy table per mode, as in report.md."""
    from rich.table import Table

    from kwsdeploy.calibration.report import float_cell

    for mode, rep in (report or {}).items():
        from rich.markup import escape

        table = Table(title=escape(f"accuracy by precision ({mode}; {rep['data']})"))
        for col in ("file", "recipe", "top-1", "macro F1", "agree fp32", "stream acc", "FA/h", "KiB", "vs fp32",
                    "weights vs fp32", "float layers"):
            table.add_column(col, justify="left" if col in ("file", "recipe") else "right", no_wrap=True)
        for r in rep["rows"]:
            s = r.get("stream", {})
            table.add_row(
                r["file"], r["recipe"] or "-", f"{r['top1']:.1%}", f"{r['macro_f1']:.3f}",
                f"{r['agreement_with_fp32']:.1%}", f"{s['accuracy']:.1%}" if s else "-",
                f"{s['false_alarms_per_hour']:.0f}" if s else "-", f"{r['bytes'] / 1024:.0f}", f"{r['size_vs_fp32']:.2f}x",
                f"{r['weights_vs_fp32']:.2f}x", float_cell(r))
        con.print(table)
