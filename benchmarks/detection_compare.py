"""Before -> after table of two `benchmarks/detection.sh` result folders (same models), with what the
hold-out guard of `kwsdeploy tune` chose in the second (its held-out figures on the tune recording).

Usage: python benchmarks/detection_compare.py BEFORE_DIR AFTER_DIR   (each benchmarks/results/detection/<TAG>)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kwsdeploy.contract import DetectionSettings


def _at(model_dir: Path) -> dict:
    """Per recording: heard, FA/h speech, FA/h noise; and the settings text."""
    det = json.loads((model_dir / "det.json").read_text())
    out = {}
    for name, r in det["recordings"].items():
        at = r["at_settings"]
        fa = at["false_alarms_per_hour_by_part"]
        out[name] = (at["recall"], fa.get("speech", 0.0), fa.get("noise", 0.0), at["false_alarms_by_part"])
        s = DetectionSettings.from_dict(r["settings"])
        out["settings"] = f"{s.threshold_text()} ({s.smoothing_seconds:g} s, T {s.temperature:g})"
    return out


def _guard(model_dir: Path) -> str:
    g = (json.loads((model_dir / "tune.json").read_text()).get("tuned") or {}).get("holdout") or {}
    if "chosen" not in g:
        return g.get("skipped", "-")
    cells = []
    for r in g["candidates"]:
        mark = "**" if (r["thresholds"], r["margin_steps"]) == (g["chosen"]["thresholds"],
                                                              g["chosen"]["margin_steps"]) else ""
        cells.append(f"{mark}{r['thresholds'].replace('_', ' ')} +{r['margin_steps']}: "
                     f"{100 * (1 - r['false_reject_rate']):.1f} %, {r['non_keyword_false_alarms_per_hour']:.2f}{mark}")
    return "; ".join(cells)


def main(before: Path, after: Path) -> str:
    rows = ["| model | settings before -> after | keywords heard | FA/h speech (count) | FA/h noise | digits heard |"
            " held out on the tune recording (candidate +margin in grid steps: heard, FA/h; **chosen**) |",
            "|---|---|---|---|---|---|---|"]
    for model_dir in sorted(p for p in after.iterdir() if (p / "det.json").is_file()):
        if not (before / model_dir.name / "det.json").is_file():
            continue
        b, a = _at(before / model_dir.name), _at(model_dir)
        kb, ka = b["keywords"], a["keywords"]
        rows.append(
            f"| {model_dir.name} | {b['settings']} -> {a['settings']} | {100 * kb[0]:.1f} -> **{100 * ka[0]:.1f} %** | "
            f"{kb[1]:.1f} ({kb[3]['speech']}) -> **{ka[1]:.1f}** ({ka[3]['speech']}) | {kb[2]:.1f} -> {ka[2]:.1f} | "
            f"{100 * b['digits'][0]:.1f} -> {100 * a['digits'][0]:.1f} % | {_guard(model_dir)} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(main(Path(sys.argv[1]), Path(sys.argv[2])), end="")
