"""`kwsdeploy export --int8`: the fp32 (and fp16) bundle, INT8 graphs per target recipe calibrated on
real speech, and the accuracy report; written atomically like every bundle (nothing half-written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def eval_data_for(labels, options, sample_rate: int, con):
    """The report's held-out data, split `options.eval_split`: of `options.eval_data` (a refusal when it
    cannot be used: the user asked for it), else of a prepared --calib-data, else of the demo corpus
    (a warning and no report when that fails)."""
    from kwsdeploy.calibration.data import CalibrationError
    from kwsdeploy.calibration.report import held_out_data
    from kwsdeploy.data.noise import background_noise

    if options.eval_data is not None:
        return explicit_eval_data(Path(options.eval_data), labels, sample_rate, options.eval_split,
                                  options.eval_stream_clips)
    name = None
    calib_data = options.calib_data
    if calib_data is not None and (Path(calib_data) / "labels.json").is_file():
        prepared = Path(calib_data)
    else:
        from kwsdeploy.data.demo import demo_corpus_dir

        prepared, name = Path(demo_corpus_dir()), "demo corpus"
    try:
        return held_out_data(prepared, labels, options.eval_split, options.eval_stream_clips,
                             noise=background_noise(prepared), name=name)
    except (CalibrationError, FileNotFoundError, ValueError) as exc:
        con.print(f"[yellow]no accuracy report: {exc}[/yellow]")
        return None


def explicit_eval_data(prepared: Path, labels, sample_rate: int, split: str, stream_clips: int,
                       name: str | None = None):
    """`--eval-data DIR --eval-split S`: the split's clips and stream recording (`stream_clips` of them, 0:
    all); one-line refusals (not prepared, no such split, another rate, unknown labels)."""
    from kwsdeploy.calibration.data import CalibrationError
    from kwsdeploy.calibration.report import held_out_data
    from kwsdeploy.data.noise import background_noise
    from kwsdeploy.data.prepared import load_meta, read_jsonl

    if not (prepared / "labels.json").is_file():
        raise CalibrationError(f"--eval-data {prepared} is not a prepared directory (no labels.json); prepare it "
                               "with 'kwsdeploy data prepare-gsc'.")
    jsonl = prepared / f"{split}.jsonl"
    if not jsonl.is_file() or not read_jsonl(jsonl):
        raise CalibrationError(f"--eval-data {prepared} has no clips in its {split} split; pass --eval-split with "
                               "a split it has.")
    rate = int(load_meta(prepared).get("sample_rate", sample_rate))
    if rate != sample_rate:
        raise CalibrationError(f"--eval-data {prepared} is at {rate} Hz but the model's card expects {sample_rate} Hz; "
                               f"prepare it at {sample_rate} Hz.")
    return held_out_data(prepared, labels, split, stream_clips, noise=background_noise(prepared), name=name)


def export_int8(out_dir: Path, overwrite: bool, inputs, options, build_kwargs: dict[str, Any], con):
    """build_bundle with fp32, fp16 and the INT8 precisions of `options` (calibrated on real speech),
    then the accuracy report, then write_bundle; returns (ExportResult, report)."""
    from kwsdeploy.atomic import BUNDLE, check_output_dir
    from kwsdeploy.calibration.passes import PRECISION_OF_TARGET, CalibrationSource, add_report, calibration_clips
    from kwsdeploy.exporters.bundle import ExportResult, build_bundle, write_bundle

    from kwsdeploy.calibration.presets import apply_preset

    check_output_dir(Path(out_dir), BUNDLE, overwrite, inputs)
    options, _ = apply_preset(options, (build_kwargs.get("checkpoint") or {}).get("weights_sha256"))
    if options.preset:
        con.print(f"INT8 settings: {options.preset}")
    fc = build_kwargs["feature_config"]
    clips = calibration_clips(options, build_kwargs["labels"], fc)  # refusals before any export work
    cpu_clips = None
    if "clips" in options.cpu and "cpu" in options.targets:  # the cpu recipe's own clip count (a preset's)
        import dataclasses

        cpu_clips = calibration_clips(dataclasses.replace(options, clips=options.cpu["clips"]), build_kwargs["labels"], fc)
    data = eval_data_for(build_kwargs["labels"], options, fc.sample_rate, con)
    precisions = ("fp32", "fp16", *(PRECISION_OF_TARGET[t] for t in options.targets))  # fp16: a report row
    with con.status("INT8: exporting ...") as status:
        source = CalibrationSource(clips, fc, options.method, options.quantize_state, options.percentile,
                                   options.keep_float, options.preset, progress=lambda msg: status.update(f"INT8: {msg}"),
                                   cpu={k: v for k, v in options.cpu.items() if k != "clips"}, cpu_clips=cpu_clips)
        manifest, blobs, rows = build_bundle(**{**build_kwargs, "precisions": precisions}, calibration_data=source)
        report = None
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
