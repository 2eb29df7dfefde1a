"""INT8 settings chosen per shipped checkpoint on the validation speaker, keyed by the checkpoint's
weights_sha256 (other weights get the library defaults). `export --int8` applies a preset to every
setting the user did not give; the calibration record names it. Each entry says how it was chosen
(`benchmarks/int8_ablation.py --study calib`, README "INT8")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from kwsdeploy.calibration.data import DEFAULT_CLIPS
from kwsdeploy.calibration.passes import CPU_FIELDS  # a preset's `cpu` may give these (each unless the user did)
from kwsdeploy.calibration.qdq import PERCENTILE

PRESET_FIELDS = CPU_FIELDS  # a preset gives the same four settings, shared or the cpu recipe's own


def describe_settings(method: str, percentile: float, clips: int, keep_float) -> str:
    """`minmax, 64 clips`, `percentile@99.99, 256 clips, keep float first,last`."""
    pct = f"@{percentile:g}" if method == "percentile" else ""
    keep = f", keep float {','.join(keep_float)}" if keep_float else ""
    return f"{method}{pct}, {clips} clips{keep}"


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
    cpu: Mapping[str, Any] = field(default_factory=dict)  # the cpu recipe's own CPU_FIELDS (others: as above)
    cpu_chosen_on: str = ""

    def cpu_settings(self) -> dict[str, Any]:
        """The cpu recipe's full settings (its own where `cpu` gives them, else the shared ones)."""
        return {f: self.cpu.get(f, getattr(self, f)) for f in CPU_FIELDS}

    def describe(self) -> str:
        shared = describe_settings(self.method, self.percentile, self.clips, self.keep_float)
        cpu = f"; cpu recipe: {describe_settings(**self.cpu_settings())}, chosen on {self.cpu_chosen_on}" if self.cpu else ""
        return f"{self.model} preset ({shared}; chosen on {self.chosen_on}{cpu})"


_VALID = "the validation speaker (theo, 550 clips of a prepared FSDD tree)"
# Rule (benchmarks/results/int8_calib_valid.md): the variant with the highest held-out logits SQNR vs fp32
# on the validation speaker; one within 0.25 dB of a simpler one (fewer layers kept float, fewer clips)
# loses to it; the default (64 clips, minmax, nothing kept float) unless the winner beats it by >= 1 dB.
# The cpu recipe's own settings (`cpu`; benchmarks/results/int8_calib_valid.md, "matchboxnet-causal: the cpu
# recipe's own settings"), rule written before measuring: of the static candidate's variants (7-bit weights
# only: 8-bit ones saturate on AVX2 without VNNI) faster than fp32 by INT8_CPU_MIN_SPEEDUP at batch 1 and 64,
# the highest agreement with fp32 on the validation speaker; among those within one clip of it, the highest
# held-out logits SQNR; one within 0.25 dB of a simpler one (fewer layers kept float, fewer clips) loses to it.
PRESETS: tuple[Int8Preset, ...] = (
    Int8Preset("tcresnet8-causal", "67ae55ea1319f885321f54ce32537e413a3650bfaf14415aa2f1d6baebed530e",
               clips=256, keep_float=("first", "last"), chosen_on=f"{_VALID}: 35.2 vs 28.5 dB"),
    # The weights shipped in session 14 (session 13's H); no cpu settings of its own: its static candidate leaves
    # nearly every layer float for these weights (0.94x of fp32's bytes for every variant; int8_calib_valid.md).
    Int8Preset("matchboxnet-causal", "f19cc01d9bfb6ea6f41f3ac143fb8be63ea7e9311e6eb3f4d94a1ee08c0da419",
               clips=256, keep_float=("first", "last"), chosen_on=f"{_VALID}: 40.8 vs 35.3 dB"),
    Int8Preset("kwm-causal-64-4", "daf107f203d7ff74807cfc16179cf2c575987e87d238040e5aa1e6ad7bd7c0e2",
               clips=256, method="percentile", percentile=99.99, chosen_on=f"{_VALID}: 31.7 vs 30.6 dB"),
    Int8Preset("bcresnet1-causal", "8073704fe52e32521fae3a14912d7a069f043244f654f34fedd17ff127f11772",
               keep_float=("first",), chosen_on=f"{_VALID}: 25.1 vs 22.1 dB"),
    # The weights shipped in session 15 (session 14's K; int8_calib_valid.md): the same settings won again.
    Int8Preset("convmixer", "9467c7ba7f1fcf787fcec64b101e90d67eea2e0ed33576f9669e98e030e47bd6",
               keep_float=("first", "last"), chosen_on=f"{_VALID}: 34.5 vs 32.0 dB"),
)


def preset_for(weights_sha256: str | None, presets=None) -> Int8Preset | None:
    """The preset of these exact weights, if any."""
    if not weights_sha256:
        return None
    return next((p for p in (PRESETS if presets is None else presets) if p.weights_sha256 == weights_sha256), None)


def apply_preset(options, weights_sha256: str | None, presets=None):
    """`options` (Int8Options) with the checkpoint's preset on every field not in `options.explicit`;
    unchanged when the weights have none. The preset's cpu settings go to `options.cpu` when both
    recipes are built, become the settings when the cpu recipe is built alone (the manifest's record
    then names what its one INT8 graph used), and are dropped without it. Returns (options, preset or None)."""
    preset = preset_for(weights_sha256, presets)
    if preset is None:
        return options, None
    given = set(options.explicit)
    changes = {f: getattr(preset, f) for f in PRESET_FIELDS if f not in given}
    cpu = {f: v for f, v in preset.cpu.items() if f not in given}  # a flag the user gave binds both recipes
    if "cpu" not in options.targets:
        cpu = {}
    elif tuple(options.targets) == ("cpu",):
        changes, cpu = {**changes, **cpu}, {}
    return dataclasses.replace(options, **changes, cpu=cpu, preset=preset.describe()), preset
