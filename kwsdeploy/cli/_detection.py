"""Glue of `eval-stream --recording keywords,digits` and `tune`: build the annotated recordings,
stream them through a source once, and report or tune the detector on the logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from kwsdeploy.atomic import check_report_file, json_report, write_report


def _data(data: Optional[Path]) -> Path:
    if data is not None:
        return Path(data)
    from kwsdeploy.data.demo import demo_corpus_dir

    return demo_corpus_dir()


def _is_det_report(d) -> bool:
    return isinstance(d, dict) and all(k in d for k in ("source", "hop_ms", "recordings"))


DET_REPORT = json_report("detection report (det.json)", _is_det_report)


def recording_logits(src, recording: str, data: Optional[Path], split: str, speech_set: str, minutes: float,
                     seed: int) -> tuple[np.ndarray, list, dict, float]:
    """(logits, parts, description, seconds) of one recording streamed through `src`; `keywords,digits`: those
    recordings one after the other, streamed as one (`detection_sets.join_recordings`)."""
    from rich.progress import Progress

    from kwsdeploy.data.detection_sets import build, join_recordings, recording_names

    names = recording_names(recording)
    with Progress(transient=True) as bar:
        pieces = []
        for name in names:
            task = bar.add_task(f"building the {name} recording", total=1.0)
            pieces.append(build(name, _data(data), split, speech_set, minutes, seed,
                                progress=lambda f, task=task: bar.update(task, completed=f)))
            bar.update(task, completed=1.0)
        audio, parts, info = join_recordings(pieces)
        task = bar.add_task(f"streaming {info['seconds'] / 60:.1f} min through {src.describe}", total=1.0)
        logits = src.logits(audio)
        bar.update(task, completed=1.0)
    from kwsdeploy.contract import samples_to_seconds

    return logits, parts, info, samples_to_seconds(len(audio), src.spec.feature_config)


def eval_detection_cmd(src, settings, recordings: str, data, split, speech_set, minutes, seed, target, out) -> dict:
    """Report every requested recording; print a summary; write det.json (+ PNGs) under `out`."""
    from kwsdeploy.data.detection_sets import RECORDINGS
    from kwsdeploy.streaming.det import keyword_curve, plot_det
    from kwsdeploy.streaming.det_report import report

    names = [r.strip() for r in recordings.split(",") if r.strip()]
    bad = [r for r in names if r not in RECORDINGS]
    if bad or not names:
        raise ValueError(f"--recording {recordings!r}: choose clips, or a comma list of {', '.join(RECORDINGS)}.")
    if out is not None:  # before streaming: a det.json that is not ours is refused
        check_report_file(Path(out) / "det.json", DET_REPORT)
    result: dict = {"source": src.describe, "hop_ms": round(src.hop_seconds * 1000, 3), "recordings": {}}
    pngs = []
    for name in names:
        logits, parts, info, seconds = recording_logits(src, name, data, split, speech_set, minutes, seed)
        r = report(logits, src.labels, src.hop_seconds, parts, seconds, settings, target)
        curve = r.pop("_curve")
        result["recordings"][name] = {"recording": info, **r}
        _print(name, info, r)
        if out is not None:
            curves = {f"all ({name})": curve, **{k: keyword_curve(curve, k) for k in sorted(curve[0].per_keyword)}}
            png = plot_det(curves, Path(out) / f"det-{name}.png", title=f"{src.describe}: {name} recording")
            if png is not None:
                pngs.append(str(png))
    if out is not None:
        write_report(Path(out) / "det.json", json.dumps(result, indent=1) + "\n", DET_REPORT)
        typer.echo(f"wrote {Path(out) / 'det.json'}" + (f" and {', '.join(pngs)}" if pngs else
                   " (no PNG: pip install 'kwsdeploy[plot]')"), err=True)
    return result


def _print(name: str, info: dict, r: dict) -> None:
    at, s = r["at_settings"], r["settings"]
    fa = at["false_alarms_per_hour_by_part"]
    from kwsdeploy.contract import DetectionSettings

    typer.echo(f"{name}: {info['seconds'] / 60:.1f} min, {at['keyword_events']} keywords; at threshold "
               f"{DetectionSettings.from_dict(s).threshold_text()}: heard {at['recall']:.1%}, false alarms {at['false_alarms']} "
               f"({at['false_alarms'] / at['hours']:.1f}/h; speech {fa.get('speech', 0):.1f}/h, "
               f"noise {fa.get('noise', 0):.1f}/h, near keywords {at['false_alarms_by_part']['near_keyword']})", err=True)
    for b in r["det"]["at_budget"] + ([r["det"]["target"]] if "target" in r["det"] else []):
        th = "none" if b["threshold"] is None else f"{b['threshold']:.4g}"
        typer.echo(f"  {b['fa_per_hour_budget']:g} FA/h: false reject rate {b['false_reject_rate']:.1%} "
                   f"(threshold {th})", err=True)
