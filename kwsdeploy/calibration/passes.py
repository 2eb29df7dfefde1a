"""The INT8 precision pass: from a bundle's fp32 graphs (in memory) to INT8 graphs per target recipe,
each validated, parity-checked on the bundle's golden inputs and stamped like its fp32 source.

Nothing here touches the disk: the exporter adds the returned files to its blobs and writes the
bundle atomically as before. Imports no exporter (the exporters may call this pass).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from kwsdeploy import tolerances
from kwsdeploy.calibration.data import (
    DEFAULT_CLIPS,
    DEFAULT_SEED,
    CalibrationClips,
    CalibrationSet,
    collect_calibration,
    load_calibration_clips,
)
from kwsdeploy.calibration.qdq import QuantizeError, QuantResult, tensorrt_recipe
from kwsdeploy.manifest import GOLDEN_NAME, Manifest, ModelFile

TARGETS = ("tensorrt", "cpu")
PRECISION_OF_TARGET = {"tensorrt": "int8-tensorrt", "cpu": "int8-cpu"}


@dataclass(frozen=True)
class Int8Options:
    """What `--int8` asked for: targets, calibration data, clip count, method, seed."""

    targets: tuple[str, ...] = TARGETS
    calib_data: Path | None = None
    clips: int = DEFAULT_CLIPS
    method: str = "minmax"
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise QuantizeError(f"--target must be tensorrt, cpu or both, got {', '.join(bad) or 'nothing'}.")
        if self.clips < 1:
            raise QuantizeError(f"--calib-clips must be >= 1, got {self.clips}.")
        from kwsdeploy.calibration.qdq import METHODS

        if self.method not in METHODS:
            raise QuantizeError(f"--calib-method must be one of {', '.join(METHODS)}, got {self.method!r}.")


def parse_targets(target: str) -> tuple[str, ...]:
    """`--target tensorrt|cpu|both` as a tuple of recipes."""
    if target == "both":
        return TARGETS
    if target in TARGETS:
        return (target,)
    raise QuantizeError(f"--target must be tensorrt, cpu or both, got {target!r}.")


def int8_name(fp32_name: str, precision: str) -> str:
    """model.onnx -> model.int8-tensorrt.onnx; model.offline.onnx -> model.offline.int8-cpu.onnx."""
    stem = fp32_name[: -len(".onnx")] if fp32_name.endswith(".onnx") else fp32_name
    return f"{stem}.{precision}.onnx"


@dataclass
class Int8Files:
    """What the pass adds to a bundle: files, their bytes, and the calibration record."""

    files: list[ModelFile] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    results: dict[str, QuantResult] = field(default_factory=dict)  # file name -> recipe result
    calibration: dict = field(default_factory=dict)


def _offline_calibration(clips: CalibrationClips, input_name: str, feature_config) -> CalibrationSet:
    """Offline graphs have no state: one tuple per clip (its features [1, 1, n_mfcc, frames] or audio)."""
    if input_name == "audio":
        x = clips.audio[:, None]
        tuples = [{input_name: np.array(a, copy=True)} for a in x]
    else:
        from kwsdeploy.features import compute_features

        f = compute_features(clips.audio, feature_config).numpy()[:, None, :, : feature_config.clip_frames]
        tuples = [{input_name: np.array(f[i:i + 1], copy=True)} for i in range(len(f))]
    return CalibrationSet(input_name, tuples, len(tuples), 1, 1, clips)


def _golden_parity(proto: onnx.ModelProto, mf: ModelFile, golden: Mapping[str, np.ndarray]) -> float:
    from kwsdeploy.runtime.ort import OrtStepRunner, make_session, run_offline

    x, expected = golden[f"{mf.golden}.input"], golden[f"{mf.golden}.logits"]
    data = proto.SerializeToString()
    got = (OrtStepRunner(data, batch=x.shape[0], threads=1).run(x) if mf.mode == "step"
           else run_offline(make_session(data, threads=1), x))
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))


def _stamped(proto: onnx.ModelProto, source: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """The fp32 file's metadata (manifest identity hash ...) on the INT8 graph, precision changed."""
    meta = {p.key: p.value for p in source.metadata_props}
    meta["kwsdeploy.precision"] = precision
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name, proto.producer_version = source.producer_name, source.producer_version
    return proto


def calibration_clips(options: Int8Options, labels, feature_config) -> CalibrationClips:
    """The clips `options` names (refusals happen here, before any export work)."""
    return load_calibration_clips(options.calib_data, labels, feature_config.sample_rate,
                                  feature_config.clip_samples, options.clips, options.seed)


def int8_pass(manifest: Manifest, blobs: Mapping[str, bytes], options: Int8Options, progress=None,
              clips: CalibrationClips | None = None) -> Int8Files:
    """INT8 graphs for every fp32 file of the bundle, one per target recipe (validated, parity-gated)."""
    import collections

    from kwsdeploy.calibration.cpu import cpu_recipe
    from kwsdeploy.calibration.validate import validate_tensorrt_qdq

    say = progress or (lambda msg: None)
    fc = manifest.feature_config
    clips = clips if clips is not None else calibration_clips(options, manifest.labels, fc)
    with np.load(io.BytesIO(blobs[GOLDEN_NAME]), allow_pickle=False) as z:
        golden = {k: z[k] for k in z.files}
    out = Int8Files()
    per_file: dict[str, dict] = {}
    for mf in [f for f in manifest.files if f.precision == "fp32"]:
        src = onnx.load_from_string(blobs[mf.path])
        say(f"calibrating {mf.path} on {len(clips.indices)} clips of {clips.source}")
        calib = (collect_calibration(blobs[mf.path], clips, fc) if mf.mode == "step"
                 else _offline_calibration(clips, mf.input_kind, fc))
        calib.check_state_ranges()
        if mf.mode == "step" and not out.calibration:
            out.calibration = {**calib.record(), "method": options.method}
        for target in options.targets:
            precision = PRECISION_OF_TARGET[target]
            say(f"{precision}: quantizing {mf.path}")
            if target == "tensorrt":
                result = tensorrt_recipe(src, calib, options.method)
                validate_tensorrt_qdq(result.proto)
            else:
                result = cpu_recipe(src, calib)
            name = int8_name(mf.path, precision)
            proto = _stamped(result.proto, src, precision)
            err = _golden_parity(proto, mf, golden)
            scale = float(np.max(np.abs(golden[f"{mf.golden}.logits"])))
            atol = tolerances.INT8_PARITY_REL_ATOL * max(scale, 1.0)
            if not err <= atol:
                raise QuantizeError(
                    f"{name}: INT8 logits differ from torch by {err:.3g} on the golden clips (allowed {atol:.3g}); "
                    "calibrate on more data (--calib-clips) or another --calib-method; nothing was written.")
            out.files.append(ModelFile(
                path=name, mode=mf.mode, precision=precision, input_kind=mf.input_kind,
                opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                inputs=mf.inputs, outputs=mf.outputs, nodes=len(proto.graph.node),
                op_histogram=dict(collections.Counter(n.op_type for n in proto.graph.node).most_common()),
                parity_max_abs=err, parity_atol=atol, golden=mf.golden, exporter=mf.exporter,
            ))
            out.blobs[name] = proto.SerializeToString()
            out.results[name] = result
            per_file[name] = {"source": mf.path, "recipe": target, "settings": result.settings,
                              "quantized_layers": result.quantized, "float_layers": result.float_layers}
    out.calibration["files"] = per_file
    return out


def apply_int8(manifest: Manifest, blobs: Mapping[str, bytes], options: Int8Options, eval_data=None,
               detection=None, progress=None, clips: CalibrationClips | None = None) -> tuple[Manifest, dict[str, bytes], Int8Files, dict | None]:
    """`int8_pass`, then the accuracy report (when `eval_data` is given) in the manifest and as report.md;
    hashes and sizes recomputed. Returns (manifest, every blob, the INT8 files, the report)."""
    import dataclasses

    from kwsdeploy.calibration.report import REPORT_NAME, precision_report, report_markdown
    from kwsdeploy.manifest import sha256_bytes

    added = int8_pass(manifest, blobs, options, progress, clips)
    all_blobs = {**blobs, **added.blobs}
    manifest = dataclasses.replace(manifest, files=(*manifest.files, *added.files), calibration=added.calibration)
    report = None
    if eval_data is not None:
        if progress:
            progress(f"accuracy report on {eval_data.source}")
        modes = [m for m in ("step", "offline") if any(f.mode == m for f in manifest.files)]
        report = {m: precision_report(manifest, all_blobs, eval_data, detection, added.calibration, m) for m in modes}
        acc = dict(manifest.accuracy or {})
        acc["precisions"] = report
        manifest = dataclasses.replace(manifest, accuracy=acc)
        all_blobs[REPORT_NAME] = "\n".join(report_markdown(manifest, r) for r in report.values()).encode()
    manifest = dataclasses.replace(
        manifest, hashes={n: sha256_bytes(b) for n, b in all_blobs.items()},
        sizes={n: len(b) for n, b in all_blobs.items()},
    )
    return manifest, all_blobs, added, report
