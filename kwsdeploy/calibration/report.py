"""The accuracy report of a bundle's precisions (fp32, fp16, INT8 recipes), the way a device runs them.

Clip top-1, macro F1 and agreement with fp32 on a held-out speaker, each clip streamed from the zero
state through the ONNX Runtime step runner (the last packet's logits decide); stream detection
accuracy and false alarms per hour on one long recording of held-out clips joined by noise (as
`kwsdeploy eval-stream`); file size; the layers kept float; the calibration settings. Rendered as
JSON (manifest) and markdown (report.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kwsdeploy.contract import DetectionSettings

REPORT_NAME = "report.md"
STREAM_CLIPS = 40


@dataclass(frozen=True)
class EvalData:
    """Held-out clips (model label indices) and, optionally, a long recording with its keyword events."""

    audio: np.ndarray  # [N, samples]
    targets: np.ndarray  # [N] indices into the model's labels
    source: str
    recording: np.ndarray | None = None
    events: tuple = ()
    recording_source: str = ""


def held_out_data(prepared: Path, labels: Sequence[str], split: str = "test", stream_clips: int = STREAM_CLIPS,
                  noise: np.ndarray | None = None, seed: int = 0, name: str | None = None) -> EvalData:
    """A prepared split's clips with targets in the model's label order, plus the eval-stream recording."""
    from kwsdeploy.calibration.data import CalibrationError
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.prepared import load_labels
    from kwsdeploy.streaming.stream_eval import build_long_recording

    data_labels = load_labels(prepared)
    unknown = [x for x in data_labels if x not in labels]
    if unknown:
        raise CalibrationError(f"{prepared} has label(s) {unknown} that the model does not know "
                               f"(its labels: {', '.join(labels)}).")
    ds = KwsDataset(prepared, split)
    audio = np.stack([np.asarray(ds.clip(i), dtype=np.float32) for i in range(len(ds))])
    targets = np.array([list(labels).index(data_labels[t]) for t in ds.targets])
    order = np.random.default_rng(seed).permutation(len(ds))[: stream_clips or len(ds)]
    recording, events = build_long_recording([(audio[i], labels[targets[i]]) for i in order], noise=noise, seed=seed)
    return EvalData(audio, targets, f"{name or prepared} [{split}], {len(ds)} clips", recording, tuple(events),
                    f"{len(order)} {split} clips joined by noise gaps (seed {seed})")


def _feature_input(audio: np.ndarray, input_kind: str, mode: str, feature_config) -> np.ndarray:
    from kwsdeploy.calibration.data import stream_inputs

    if mode == "step":
        return stream_inputs(audio, input_kind, feature_config)
    if input_kind == "audio":
        return np.ascontiguousarray(audio[:, : feature_config.clip_samples], dtype=np.float32)
    from kwsdeploy.features import compute_features

    f = compute_features(audio, feature_config).numpy()[:, None, :, : feature_config.clip_frames]
    return np.ascontiguousarray(f, dtype=np.float32)


def clip_logits(model: bytes | str | Path, mode: str, input_kind: str, audio: np.ndarray, feature_config,
                threads: int = 1) -> np.ndarray:
    """Logits [N, classes] of each clip: streamed from the zero state (last packet) or the offline graph."""
    from kwsdeploy.runtime.ort import OrtStepRunner, make_session, run_offline

    x = _feature_input(audio, input_kind, mode, feature_config)
    if mode == "step":
        return OrtStepRunner(model, batch=len(audio), threads=threads).run(x)[-1]
    return run_offline(make_session(model, threads=threads), x)


def stream_score(model: bytes | str | Path, input_kind: str, data: EvalData, labels: Sequence[str], spec,
                 detection: DetectionSettings) -> dict[str, Any]:
    """Detection accuracy and false alarms per hour of a step graph on the data's long recording."""
    from kwsdeploy.contract import samples_to_seconds
    from kwsdeploy.runtime.detect import KeywordDetector
    from kwsdeploy.runtime.ort import OrtStepRunner
    from kwsdeploy.streaming.stream_eval import score_detections

    fc = spec.feature_config
    x = _feature_input(data.recording[None], input_kind, "step", fc)
    logits = OrtStepRunner(model, batch=1, threads=1).run(x)[:, 0]
    hop = spec.hop_seconds
    det = KeywordDetector.from_settings(labels, hop, detection)
    found = det.update(logits)
    score = score_detections([(e.label, e.time) for e in found], list(data.events),
                             samples_to_seconds(len(data.recording), fc))
    return {"accuracy": score.accuracy, "false_alarms_per_hour": score.false_alarms_per_hour,
            "keyword_events": score.keyword_events, "false_alarms": score.false_alarms}


def evaluate_file(model: bytes | str | Path, mode: str, input_kind: str, data: EvalData, labels: Sequence[str],
                  feature_config, spec=None, detection: DetectionSettings | None = None,
                  reference: np.ndarray | None = None) -> dict[str, Any]:
    """Clip metrics (and agreement with `reference` predictions, and stream scores for a step graph)."""
    from kwsdeploy.train.evaluate import classification_metrics

    pred = clip_logits(model, mode, input_kind, data.audio, feature_config).argmax(1)
    m = classification_metrics(data.targets.tolist(), pred.tolist(), list(labels))
    row: dict[str, Any] = {"top1": m["accuracy"], "macro_f1": m["macro_f1"], "clips": int(len(pred)),
                           "predictions": pred.tolist()}
    if reference is not None:
        row["agreement_with_fp32"] = float(np.mean(pred == reference))
    if mode == "step" and spec is not None and detection is not None and data.recording is not None:
        row["stream"] = stream_score(model, input_kind, data, labels, spec, detection)
    return row


def precision_report(manifest, blobs: Mapping[str, bytes], data: EvalData, detection: DetectionSettings,
                     calibration: Mapping[str, Any] | None = None, mode: str = "step") -> dict[str, Any]:
    """One row per file of `mode` (fp32 first): accuracy, agreement, stream, size, float layers."""
    files = sorted((f for f in manifest.files if f.mode == mode), key=lambda f: f.precision != "fp32")
    recipes = dict((calibration or {}).get("files", {}))
    rows, reference = [], None
    fp32_bytes = next((len(blobs[f.path]) for f in files if f.precision == "fp32"), None)
    fp32_weights = next((model_weight_bytes(blobs[f.path]) for f in files if f.precision == "fp32"), None)
    for f in files:
        row = evaluate_file(blobs[f.path], f.mode, f.input_kind, data, manifest.labels, manifest.feature_config,
                            manifest.stream, detection, reference)
        if f.precision == "fp32":
            reference = np.array(row["predictions"])
            row["agreement_with_fp32"] = 1.0
        rec = recipes.get(f.path, {})
        row.update(file=f.path, precision=f.precision, bytes=len(blobs[f.path]),
                   size_vs_fp32=round(len(blobs[f.path]) / fp32_bytes, 4) if fp32_bytes else None,
                   weight_bytes=model_weight_bytes(blobs[f.path]),
                   nodes=f.nodes, recipe=_recipe(rec),
                   float_layers=rec.get("float_layers", {}), quantized_layers=len(rec.get("quantized_layers", [])))
        row["weights_vs_fp32"] = round(row["weight_bytes"] / fp32_weights, 4) if fp32_weights else None
        row.pop("predictions")
        rows.append(row)
    return {
        "data": data.source, "stream_recording": data.recording_source, "mode": mode,
        "detection": detection.to_dict(),
        "calibration": {k: v for k, v in (calibration or {}).items() if k != "files"},
        "rows": rows,
    }


def model_weight_bytes(model: bytes) -> int:
    """Bytes of a graph's initializers outside the MFCC frontend (the size target compares these)."""
    import onnx

    proto = onnx.load_from_string(model)
    return sum(len(i.raw_data) or i.ByteSize() for i in proto.graph.initializer if not i.name.startswith("frontend/"))


def _recipe(rec: Mapping[str, Any]) -> str:
    """'tensorrt', or 'cpu: <variant chosen by measurement>' ('cpu: fp32' when no INT8 variant was faster)."""
    if rec.get("recipe") == "cpu":
        return f"cpu: {rec.get('settings', {}).get('chosen', '?')}"
    return str(rec.get("recipe", ""))


def float_cell(row: Mapping[str, Any]) -> str:
    if not row["precision"].startswith("int8"):
        return "-"
    return "all (fp32 kept)" if row["quantized_layers"] == 0 else str(len(row["float_layers"]))


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def report_markdown(manifest, report: Mapping[str, Any]) -> str:
    """report.md: the table, the layers kept float per file, the calibration settings."""
    name = manifest.model.get("name", "?")
    lines = [f"# {name}: accuracy by precision", "",
             f"Held-out clips: {report['data']} (each streamed from the zero state through the ONNX Runtime "
             "step runner; the last packet's logits decide).",
             f"Stream: {report['stream_recording']}; threshold {report['detection']['threshold']}, smoothing "
             f"{report['detection']['smoothing_seconds']} s, refractory {report['detection']['refractory_seconds']} s.", "",
             "| file | precision | recipe | top-1 | macro F1 | agrees with fp32 | stream acc. | FA / h | bytes | vs fp32 | "
             "weights vs fp32 (no frontend) | float layers |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        s = r.get("stream", {})
        lines.append(
            f"| {r['file']} | {r['precision']} | {r['recipe'] or '-'} | {_pct(r['top1'])} | {r['macro_f1']:.3f} | "
            f"{_pct(r.get('agreement_with_fp32'))} | {_pct(s.get('accuracy'))} | "
            f"{s.get('false_alarms_per_hour', float('nan')):.0f} | {r['bytes']:,} | {r['size_vs_fp32']:.2f}x | "
            f"{r['weights_vs_fp32']:.2f}x | {float_cell(r)} |")
    for r in report["rows"]:
        if not r["precision"].startswith("int8"):
            continue
        lines += ["", f"## {r['file']}: layers kept float ({len(r['float_layers'])}; {r['quantized_layers']} quantized)", ""]
        lines += [f"- `{k}`: {v}" for k, v in r["float_layers"].items()] or ["- none"]
    cal = report.get("calibration") or {}
    if cal:
        lines += ["", "## Calibration", ""]
        lines += [f"- {k}: {v}" for k, v in cal.items()]
    return "\n".join(lines) + "\n"
