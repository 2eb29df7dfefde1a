"""The INT8 precision passes of the precision table (`kwsdeploy.precisions`): `tensorrt_pass` and
`cpu_pass` map the fp32 model graph (frontend not attached: it stays float in front) to an INT8
graph calibrated on the state-aware tuples of `CalibrationSource`; `build_bundle` parity-gates them
like any precision. `add_report` then measures every file and puts the accuracy report into the
manifest and report.md. Imports no exporter (the exporters call these passes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from kwsdeploy.calibration.data import (
    DEFAULT_CLIPS,
    DEFAULT_SEED,
    CalibrationClips,
    CalibrationSet,
    collect_calibration,
    load_calibration_clips,
)
from kwsdeploy.calibration.qdq import PERCENTILE, QuantizeError, QuantResult, tensorrt_recipe
from kwsdeploy.calibration.report import STREAM_CLIPS
from kwsdeploy.hashing import sha256_bytes

TARGETS = ("tensorrt", "cpu")
CPU_FIELDS = ("clips", "method", "percentile", "keep_float")  # settings the cpu recipe may have of its own
PRECISION_OF_TARGET = {"tensorrt": "int8-tensorrt", "cpu": "int8-cpu"}


@dataclass(frozen=True)
class Int8Options:
    """What `--int8` asked for: targets, calibration data, clip count, method, seed, and the report's
    held-out data (`eval_data`: a prepared dir, its `eval_split`; None: the default, see
    `cli._export_int8.eval_data_for`)."""

    targets: tuple[str, ...] = TARGETS
    calib_data: Path | None = None
    clips: int = DEFAULT_CLIPS
    method: str = "minmax"
    seed: int = DEFAULT_SEED
    quantize_state: bool = False  # the tensorrt recipe Q/DQs the SSM state (Keyword Mamba)
    percentile: float = PERCENTILE  # the range the percentile method keeps
    keep_float: tuple[str, ...] = ()  # layers both recipes keep float: node names, `first[:N]`, `last[:N]`
    cpu: Mapping[str, Any] = field(default_factory=dict)  # the cpu recipe's own clips/method/percentile/keep_float
    eval_data: Path | None = None
    eval_split: str = "test"
    eval_stream_clips: int = STREAM_CLIPS  # clips of the report's stream recording (0: every clip of the split)
    explicit: tuple[str, ...] = ()  # fields the user gave (a checkpoint's preset fills the others: `presets`)
    preset: str = ""  # the preset applied, described

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise QuantizeError(f"--target must be tensorrt, cpu or both, got {', '.join(bad) or 'nothing'}.")
        if self.quantize_state and "tensorrt" not in self.targets:
            raise QuantizeError("--quantize-state applies to the tensorrt recipe: use --target tensorrt or both.")
        if self.clips < 1:
            raise QuantizeError(f"--calib-clips must be >= 1, got {self.clips}.")
        from kwsdeploy.calibration.qdq import METHODS, keep_float_alias

        for name in self.keep_float:  # a malformed first:N / last:N / #N is refused before any export work
            keep_float_alias(name)
        if self.method not in METHODS:
            raise QuantizeError(f"--calib-method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if not 50.0 < self.percentile < 100.0:
            raise QuantizeError(f"--calib-percentile must be between 50 and 100 (e.g. 99.99), got {self.percentile:g}.")
        if self.eval_split not in ("train", "valid", "test"):
            raise QuantizeError(f"--eval-split must be train, valid or test, got {self.eval_split!r}.")
        bad = sorted(set(self.cpu) - set(CPU_FIELDS))
        if bad:
            raise QuantizeError(f"cpu recipe settings {bad} are not among {', '.join(CPU_FIELDS)}.")
        if self.cpu:
            import dataclasses

            dataclasses.replace(self, **{k: v for k, v in self.cpu.items()}, cpu={})  # the same checks on them
        if self.eval_stream_clips < 0:
            raise QuantizeError(f"--eval-stream-clips must be >= 0 (0: every clip), got {self.eval_stream_clips}.")


def parse_targets(target: str) -> tuple[str, ...]:
    """`--target tensorrt|cpu|both` as a tuple of recipes."""
    if target == "both":
        return TARGETS
    if target in TARGETS:
        return (target,)
    raise QuantizeError(f"--target must be tensorrt, cpu or both, got {target!r}.")


def calibration_clips(options: Int8Options, labels, feature_config) -> CalibrationClips:
    """The clips `options` names (refusals happen here, before any export work)."""
    return load_calibration_clips(options.calib_data, labels, feature_config.sample_rate,
                                  feature_config.clip_samples, options.clips, options.seed)


@dataclass
class CalibrationSource:
    """The calibration data of one export (`build_bundle(calibration_data=...)`): the clips, and per
    fp32 graph the tuples met streaming them (collected once, shared by both recipes), plus what each
    pass did (for the manifest's calibration record and the report)."""

    clips: CalibrationClips
    feature_config: object
    method: str = "minmax"
    quantize_state: bool = False
    percentile: float = PERCENTILE
    keep_float: tuple[str, ...] = ()
    preset: str = ""  # the checkpoint's preset applied (`calibration.presets`), described
    cpu: Mapping[str, Any] = field(default_factory=dict)  # the cpu recipe's own method/percentile/keep_float
    cpu_clips: CalibrationClips | None = None  # the cpu recipe's own calibration clips (None: `clips`)
    sets: dict[str, CalibrationSet] = field(default_factory=dict)
    results: dict[str, QuantResult] = field(default_factory=dict)  # bundle file name -> recipe result
    progress: object = None

    def for_graph(self, proto: onnx.ModelProto, mode: str, clips: CalibrationClips | None = None) -> CalibrationSet:
        """The calibration tuples of this fp32 model graph (step: streamed; offline: one per clip) on
        `clips` (default: the shared clips)."""
        clips = self.clips if clips is None else clips
        data = proto.SerializeToString()
        key = sha256_bytes(data) + ("" if clips is self.clips else f"/cpu/{len(clips.indices)}")
        if key not in self.sets:
            self._say(f"calibrating the {mode} graph on {len(clips.indices)} clips of {clips.source}")
            calib = (collect_calibration(data, clips, self.feature_config) if mode == "step"
                     else _offline_calibration(clips, _data_input(proto), self.feature_config))
            calib.check_state_ranges()
            self.sets[key] = calib
        return self.sets[key]

    def _say(self, msg: str) -> None:
        if callable(self.progress):
            self.progress(msg)

    def record(self) -> dict:
        """The manifest's calibration record (`kwsdeploy.manifest.Calibration` fields)."""
        sets = [v for k, v in self.sets.items() if "/cpu/" not in k]
        first = sets[0].record() if sets else {}
        files = {name: {"recipe": r.recipe, "settings": r.settings, "quantized_layers": r.quantized,
                        "float_layers": r.float_layers} for name, r in self.results.items()}
        return {
            "data": self.clips.source, "clips": len(self.clips.indices), "method": self.method,
            "seed": self.clips.seed, "ranges_sha256": first.get("input_ranges_sha256", ""),
            "extra": {"split": self.clips.split, "keep_float": list(self.keep_float),
                      **({"preset": self.preset} if self.preset else {}),
                      **({"cpu": self.cpu_record()} if self.cpu or self.cpu_clips is not None else {}),
                      **({"percentile": self.percentile} if self.method == "percentile" else {}), "tuples": first.get("tuples", 0), "streams": first.get("streams", 0),
                      "stride": first.get("stride", 1), "state_inputs": first.get("state_inputs", []),
                      "files": files},
        }


    def cpu_record(self) -> dict:
        """The cpu recipe's own settings as recorded (clips, method, percentile, keep_float, ranges' hash)."""
        own = [v for k, v in self.sets.items() if "/cpu/" in k]
        out = {**dict(self.cpu), **({"clips": len(self.cpu_clips.indices)} if self.cpu_clips is not None else {})}
        if "keep_float" in out:
            out["keep_float"] = list(out["keep_float"])
        if own:
            out["ranges_sha256"] = own[0].record().get("input_ranges_sha256", "")
        return out


def _offline_calibration(clips: CalibrationClips, input_name: str, feature_config) -> CalibrationSet:
    """Offline graphs have no state: one tuple per clip (its features [1, 1, n_mfcc, frames] or audio)."""
    if input_name == "audio":
        tuples = [{input_name: np.array(a[None], copy=True)} for a in clips.audio[:, : feature_config.clip_samples]]
    else:
        from kwsdeploy.features import compute_features

        f = compute_features(clips.audio, feature_config).numpy()[:, None, :, : feature_config.clip_frames]
        tuples = [{input_name: np.array(f[i:i + 1], copy=True)} for i in range(len(f))]
    return CalibrationSet(input_name, tuples, len(tuples), 1, 1, clips, feature_config=feature_config)


def _data_input(proto: onnx.ModelProto) -> str:
    inits = {i.name for i in proto.graph.initializer}
    return next(i.name for i in proto.graph.input if i.name not in inits and not i.name.startswith("state."))


def _source(ctx) -> CalibrationSource:
    if not isinstance(ctx.calibration, CalibrationSource):
        raise QuantizeError("INT8 needs calibration data: export with --int8 (and optionally --calib-data).")
    return ctx.calibration


def _file_name(precision: str, mode: str) -> str:
    from kwsdeploy.precisions import get_precision

    return get_precision(precision).file_name(mode)


def tensorrt_pass(proto: onnx.ModelProto, ctx) -> onnx.ModelProto:
    """Precision `int8-tensorrt`: the tensorrt recipe with selective precision, Q/DQ validated."""
    from kwsdeploy.calibration.validate import validate_tensorrt_qdq

    src = _source(ctx)
    state = src.quantize_state and ctx.mode == "step"  # an offline graph has no state to quantize
    if state:
        from kwsdeploy.calibration.state_q import require_ssm_states

        require_ssm_states(proto)
    calib = src.for_graph(proto, ctx.mode)
    src._say(f"int8-tensorrt: quantizing the {ctx.mode} graph")
    result = tensorrt_recipe(proto, calib, src.method, quantize_state=state, percentile=src.percentile,
                             keep_float=src.keep_float)
    validate_tensorrt_qdq(result.proto)
    src.results[_file_name("int8-tensorrt", ctx.mode)] = result
    ctx.record = src.record()
    return result.proto


def cpu_pass(proto: onnx.ModelProto, ctx) -> onnx.ModelProto:
    """Precision `int8-cpu`: the fastest INT8 variant ONNX Runtime runs here (fp32 when none is faster)."""
    from kwsdeploy.calibration.cpu import cpu_recipe

    src = _source(ctx)
    calib = src.for_graph(proto, ctx.mode, src.cpu_clips)
    src._say(f"int8-cpu: building and timing the {ctx.mode} graph's candidates")
    own = dict(src.cpu)
    result = cpu_recipe(proto, calib, method=own.get("method", src.method), percentile=own.get("percentile", src.percentile),
                        keep_float=own.get("keep_float", src.keep_float))
    src.results[_file_name("int8-cpu", ctx.mode)] = result
    ctx.record = src.record()
    return result.proto


def add_report(manifest, blobs: dict[str, bytes], eval_data, detection) -> tuple[object, dict[str, bytes], dict]:
    """The accuracy report of every file (per mode) into manifest.accuracy['precisions'] and report.md;
    hashes and sizes recomputed. Returns (manifest, blobs, report)."""
    import dataclasses

    from kwsdeploy.calibration.report import REPORT_NAME, precision_report, report_markdown
    from kwsdeploy.manifest import sha256_bytes

    cal = manifest.calibration
    record = {**cal.to_dict(), **cal.extra} if cal is not None else {}
    record.pop("extra", None)
    modes = [m for m in ("step", "offline") if any(f.mode == m for f in manifest.files)]
    report = {m: precision_report(manifest, blobs, eval_data, detection, record, m) for m in modes}
    manifest = dataclasses.replace(manifest, accuracy={**dict(manifest.accuracy or {}), "precisions": report})
    blobs = {**blobs, REPORT_NAME: "\n".join(report_markdown(manifest, r) for r in report.values()).encode()}
    manifest = dataclasses.replace(manifest, hashes={n: sha256_bytes(b) for n, b in blobs.items()},
                                   sizes={n: len(b) for n, b in blobs.items()})
    return manifest, blobs, report
