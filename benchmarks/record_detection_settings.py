"""Write the detection settings `benchmarks/detection.sh` tuned (validation speaker + the `tune` half of
the held-out synthetic speech) into the shipped checkpoints' cards, so `kwsdeploy export --model M`
and `kwsdeploy stream --model M` use them without a `kwsdeploy tune` of their own.

Usage: python benchmarks/record_detection_settings.py RESULTS_DIR [MODEL ...]
       RESULTS_DIR = benchmarks/results/detection/<TAG> (one <model>/tune.json each); default: every
       model with a tune.json there. `kwm` is the shipped kwm-causal-64-4.
A tune.json tuned on anything but the validation split is refused: the test speaker chooses nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kwsdeploy.contract import DetectionSettings

ALIASES = {"kwm": "kwm-causal-64-4"}


def tuned_settings(tune: dict, where: str) -> DetectionSettings:
    """The settings of one tune.json; a ValueError unless they were tuned on the validation split."""
    split = ((tune.get("tuned") or {}).get("recording") or {}).get("split")
    if split != "valid":
        raise ValueError(f"{where} was tuned on split {split!r}, not 'valid': rerun benchmarks/detection.sh.")
    return DetectionSettings.from_dict(tune)


def record(results: Path, models: list[str]) -> list[str]:
    """Write each model's tuned settings into its shipped card; the lines said."""
    from kwsdeploy.runtime.tuning import write_card_detection
    from kwsdeploy.train.checkpoint import demo_checkpoint_path

    said = []
    for model in models or sorted(p.name for p in results.iterdir() if (p / "tune.json").is_file()):
        path = results / model / "tune.json"
        settings = tuned_settings(json.loads(path.read_text()), str(path))
        write_card_detection(demo_checkpoint_path(ALIASES.get(model, model)), settings)
        kt = settings.keyword_thresholds
        what = (f"per keyword {min(kt.values()):g}-{max(kt.values()):g}" if kt else f"{settings.threshold:g}")
        said.append(f"{model}: threshold {what}, smoothing {settings.smoothing_seconds:g} s, "
                    f"temperature {settings.temperature:g}")
    return said


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        for line in record(Path(sys.argv[1]), sys.argv[2:]):
            print(line)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
