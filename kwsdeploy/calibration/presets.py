"""INT8 settings chosen per shipped checkpoint on the validation speaker, keyed by the checkpoint's
weights_sha256 (other weights get the library defaults). `export --int8` applies a preset to every
setting the user did not give; the calibration record names it. Each entry says how it was chosen
(`benchmarks/int8_ablation.py --study calib`, README "INT8")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kwsdeploy.calibration.data import DEFAULT_CLIPS
from kwsdeploy.calibration.qdq import PERCENTILE

PRESET_FIELDS = ("clips", "method", "percentile", "keep_float")


@dataclass(frozen=True)
class Int8Preset:
    """Calibration settings for one checkpoint's weights, and what chose them."""

    model: str
    weights_sha256: str
    clips: int = DEFAULT_CLIPS
    method: str = "minmax"
    percentile: float = PERCENTILE
    keep_float: tuple[str, ...] = ()
    chosen_on: str = ""

    def describe(self) -> str:
        pct = f"@{self.percentile:g}" if self.method == "percentile" else ""
        keep = f", keep float {','.join(self.keep_float)}" if self.keep_float else ""
        return f"{self.model} preset ({self.method}{pct}, {self.clips} clips{keep}; chosen on {self.chosen_on})"


PRESETS: tuple[Int8Preset, ...] = ()


def preset_for(weights_sha256: str | None, presets=None) -> Int8Preset | None:
    """The preset of these exact weights, if any."""
    if not weights_sha256:
        return None
    return next((p for p in (PRESETS if presets is None else presets) if p.weights_sha256 == weights_sha256), None)


def apply_preset(options, weights_sha256: str | None, presets=None):
    """`options` (Int8Options) with the checkpoint's preset on every field not in `options.explicit`;
    unchanged when the weights have none. Returns (options, preset or None)."""
    preset = preset_for(weights_sha256, presets)
    if preset is None:
        return options, None
    given = set(options.explicit)
    changes = {f: getattr(preset, f) for f in PRESET_FIELDS if f not in given}
    return dataclasses.replace(options, **changes, preset=preset.describe()), preset
