"""Markdown summary of `benchmarks/detection.sh` results: one row per model and recording."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kwsdeploy.contract import DetectionSettings

CURVE_THRESHOLDS = (0.5, 0.7, 0.9, 0.95)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _temperature(settings: dict) -> str:
    t = float(settings.get("temperature", 1.0))
    return "" if t == 1.0 else f", temperature {t:g}"


def main(folder: Path) -> str:
    rows = ["| model | recording | minutes (speech / noise) | keywords | threshold (smoothing) | heard | "
            "FA/h speech | FA/h noise | FA next to keywords | FRR at 0.5 / 1 / 5 FA/h |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for model_dir in sorted(p for p in folder.iterdir() if (p / "det.json").is_file()):
        det = json.loads((model_dir / "det.json").read_text())
        for name, r in det["recordings"].items():
            info, at, s = r["recording"], r["at_settings"], r["settings"]
            parts = info["seconds_by_part"]
            fa = at["false_alarms_per_hour_by_part"]
            budgets = " / ".join(_pct(b["false_reject_rate"]) for b in r["det"]["at_budget"])
            rows.append(
                f"| {model_dir.name} | {name} | {info['seconds'] / 60:.1f} ({parts['speech'] / 60:.1f} / "
                f"{parts['noise'] / 60:.1f}) | {at['keyword_events']} | {DetectionSettings.from_dict(s).threshold_text()} ({s['smoothing_seconds']:g} s"
                f"{_temperature(s)}) | "
                f"{_pct(at['recall'])} | {fa.get('speech', 0):.1f} ({at['false_alarms_by_part']['speech']}) | "
                f"{fa.get('noise', 0):.1f} ({at['false_alarms_by_part']['noise']}) | "
                f"{at['false_alarms_by_part']['near_keyword']} | {budgets} |")
    rows += ["", "Along the DET curve (same smoothing and temperature), fixed thresholds:", "",
             "| model | recording | threshold | heard | FA/h all | FA/h speech | FA/h noise |", "|---|---|---:|---:|---:|---:|---:|"]
    for model_dir in sorted(p for p in folder.iterdir() if (p / "det.json").is_file()):
        det = json.loads((model_dir / "det.json").read_text())
        for name, r in det["recordings"].items():
            points = {round(p["threshold"], 4): p for p in r["curve"]}
            for th in CURVE_THRESHOLDS:
                p = points.get(th)
                if p is None:
                    continue
                fa = p["false_alarms_per_hour_by_part"]
                rows.append(f"| {model_dir.name} | {name} | {th:g} | {_pct(1 - p['false_reject_rate'])} | "
                            f"{p['false_alarms_per_hour']:.1f} | {fa.get('speech', 0):.1f} | {fa.get('noise', 0):.1f} |")
    head = (f"# Detection on unseen speech ({folder.name})\n\n"
            "Exact step form through ONNX Runtime at the threshold `kwsdeploy tune` wrote into the manifest "
            "(validation speaker + `tune` half of the held-out synthetic speech); measured on the test speaker "
            "(jackson) between the `test` half of the held-out synthetic speech and noise parts (keywords), and "
            "on jackson's digits said with 0.5 s pauses (digits). FA/h per hour of that kind of audio (count in "
            "brackets). The tuned budget and the FRR at 0.5 / 1 / 5 FA/h count false alarms on non-keyword audio "
            "(speech, noise, gaps) per hour of it; a wrong keyword fired on a keyword is a miss, listed as 'FA "
            "next to keywords'. Produced by `benchmarks/detection.sh`.\n\n")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1])), end="")
