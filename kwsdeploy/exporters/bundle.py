"""Build and write an export bundle: ONNX graphs per mode and precision, parity-checked against
torch at export, golden inputs/logits for `kwsdeploy verify`, and the manifest, written atomically
(temp dir + rename: an interrupted export leaves neither a bundle nor a temp dir behind). The fp32
graphs and their torch reference come from `kwsdeploy.exporters.graphs`.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from kwsdeploy.atomic import BUNDLE, check_output_dir, writing_dir
from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import DEFAULT_DETECTION, DetectionSettings
from kwsdeploy.exporters.graphs import (
    Graphs, TorchModules, input_kind, offline_graphs, precision_graph, resolve_modules, step_graphs,
)  # fmt: skip
from kwsdeploy.manifest import (
    GOLDEN_NAME,
    MANIFEST_NAME,
    ONNX_METADATA_KEY,
    Manifest,
    ModelFile,
    TensorInfo,
    sha256_bytes,
)
from kwsdeploy.precisions import PassContext, Precision, get_precision


class ParityError(RuntimeError):
    """The exported graph does not compute what the torch model computes (nothing was written)."""


@dataclass(frozen=True)
class ParityData:
    """Real clips for export-time parity: features [N, n_mfcc, T] and/or audio [N, samples]."""

    features: np.ndarray | None = None
    audio: np.ndarray | None = None
    source: str = ""


@dataclass
class SummaryRow:
    """One exported file, as printed in the export summary."""

    file: str
    size_bytes: int
    opset: int
    inputs: list[str]
    outputs: list[str]
    nodes: int
    parity_max_abs: float
    parity_atol: float
    seconds: float


@dataclass
class ExportResult:
    """A written bundle: its directory, manifest and summary rows."""
    path: Path
    manifest: Manifest
    rows: list[SummaryRow] = field(default_factory=list)


def model_info(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's model card: registry facts when the model has a card, plus `extra`."""
    from kwsdeploy.models.registry import count_params, kws_info

    kws = kws_info(model)
    return {
        "name": kws.name, "family": kws.family, "num_classes": kws.num_classes, "n_mfcc": kws.n_mfcc,
        "params": count_params(model), "streaming": kws.card.streaming, "reference": kws.card.reference,
        "config": dict(kws.card.config), **(extra or {}),
    }


# -- building: resolve graphs -> precision passes -> parity gate -> assemble the manifest ------------
def _ort_stream(proto_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from kwsdeploy.runtime.ort import OrtStepRunner

    return OrtStepRunner(proto_bytes, batch=x.shape[0], threads=1).run(x)


def _ort_offline(proto_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from kwsdeploy.runtime.ort import make_session, run_offline

    return run_offline(make_session(proto_bytes, threads=1), x)


def parity_gate(graphs: Graphs, precision: Precision, proto, source: str) -> tuple[float, float, np.ndarray]:
    """ONNX Runtime on the parity input vs the torch logits: (max abs error, tolerance, ORT logits).

    Raises ParityError above the precision's tolerance (NaN included)."""
    run = _ort_stream if graphs.mode == "step" else _ort_offline
    got = run(proto.SerializeToString(), graphs.x)
    err = float(np.max(np.abs(got.astype(np.float64) - graphs.expected.astype(np.float64))))
    atol = precision.atol(frontend=graphs.front is not None)
    if not err <= atol:  # also catches NaN
        raise ParityError(
            f"{precision.file_name(graphs.mode)}: ONNX Runtime vs torch max abs logit difference {err:.3g} "
            f"exceeds {atol:g} ({graphs.mode}, {precision.name}, {source or 'parity clips'}); nothing was written."
        )
    return err, atol, got


def model_file(graphs: Graphs, precision: Precision, proto, err: float, atol: float) -> ModelFile:
    """The manifest entry of one checked graph."""
    from kwsdeploy.exporters import onnx as ox
    from kwsdeploy.exporters.simplify import node_count, op_histogram

    ins, outs = ox.io_info(proto)
    return ModelFile(
        path=precision.file_name(graphs.mode), mode=graphs.mode, precision=precision.name, input_kind=graphs.kind,
        opset=ox.opset_of(proto), inputs=tuple(TensorInfo(**d) for d in ins),
        outputs=tuple(TensorInfo(**d) for d in outs), nodes=node_count(proto), op_histogram=op_histogram(proto),
        parity_max_abs=err, parity_atol=atol, golden=graphs.golden_key, exporter=ox.exporter_of(proto),
        format=precision.format, recipe=precision.recipe,
    )


def _summary_row(mf: ModelFile, seconds: float) -> SummaryRow:
    return SummaryRow(mf.path, 0, mf.opset, [t.name for t in mf.inputs], [t.name for t in mf.outputs],
                      mf.nodes, mf.parity_max_abs, mf.parity_atol, seconds)


def precision_table(precisions: Sequence[str]) -> list[Precision]:
    """The table entries of a request: fp32 (always built: the reference every other is held to) first."""
    names = list(dict.fromkeys(["fp32", *precisions]))
    return [get_precision(n) for n in names]


def assemble_manifest(
    mods: TorchModules, labels: Sequence[str], modes: Sequence[str], files: Sequence[ModelFile],
    parity_source: str, agree: Sequence[float], t_start: float, checkpoint: Mapping[str, Any] | None = None,
    accuracy: Mapping[str, Any] | None = None, model_extra: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None, detection: DetectionSettings | None = None,
) -> Manifest:
    """The manifest of the checked files (hashes and sizes are filled in once the bytes exist)."""
    import kwsdeploy

    acc = dict(accuracy or {})
    acc["onnx_vs_torch_top1_agreement"] = float(np.mean(agree)) if agree else None
    return Manifest(
        model=model_info(mods.model, model_extra),
        labels=tuple(labels),
        feature_config=mods.feature_config,
        stream=mods.smodel.stream_spec if mods.smodel is not None and "step" in modes else None,
        files=tuple(files),
        checkpoint=dict(checkpoint or {}),
        parity_data=parity_source,
        accuracy=acc,
        calibration=calibration,
        detection=detection or DEFAULT_DETECTION,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        kwsdeploy_version=kwsdeploy.__version__,
        export_seconds=round(time.perf_counter() - t_start, 3),
    )


def bundle_blobs(manifest: Manifest, protos: Mapping[str, Any], golden: Mapping[str, np.ndarray]):
    """Stamp every graph with the manifest identity, add golden.npz, and hash them into the manifest."""
    blobs = {name: _stamp(proto, manifest, name).SerializeToString() for name, proto in protos.items()}
    buf = io.BytesIO()
    np.savez(buf, **golden)
    blobs[GOLDEN_NAME] = buf.getvalue()
    manifest = dataclasses.replace(
        manifest, hashes={n: sha256_bytes(b) for n, b in blobs.items()}, sizes={n: len(b) for n, b in blobs.items()}
    )
    return manifest, blobs


def build_bundle(
    model: nn.Module,
    labels: Sequence[str],
    feature_config: FeatureConfig,
    parity: ParityData,
    modes: Sequence[str] = ("step",),
    frontend: bool = False,
    precisions: Sequence[str] = ("fp32",),
    smodel: nn.Module | None = None,
    frontend_step: nn.Module | None = None,
    frontend_offline: nn.Module | None = None,
    hop_frames: int | None = None,
    opset: int | None = None,
    exporter: str | None = None,
    golden_clips: int = 2,
    calibration_data: Any = None,
    precision_options: Mapping[str, Mapping[str, Any]] | None = None,
    **manifest_extra: Any,
) -> tuple[Manifest, dict[str, bytes], list[SummaryRow]]:
    """Export every requested mode, run the precision table on it, parity-gate every graph, then
    assemble the manifest; nothing touches the disk. Raises ParityError above a tolerance.

    `manifest_extra`: checkpoint, accuracy, model_extra, detection (see `assemble_manifest`).
    """
    from kwsdeploy.exporters import onnx as ox

    opset, exporter = opset or ox.DEFAULT_OPSET, exporter or ox.DEFAULT_EXPORTER
    t_start = time.perf_counter()
    table = precision_table(precisions)
    mods = resolve_modules(model, feature_config, modes, frontend, smodel, frontend_step, frontend_offline, hop_frames)
    data = parity.audio if frontend else parity.features
    if data is None:
        raise ValueError(f"parity needs {input_kind(frontend)} clips ({'--frontend' if frontend else 'feature'} export); none were given.")
    data = np.ascontiguousarray(data, dtype=np.float32)
    files, protos, golden, rows, agree, record = [], {}, {}, [], [], {}
    for mode in modes:
        graphs = (step_graphs if mode == "step" else offline_graphs)(mods, data, frontend, opset, exporter)
        golden[f"{graphs.golden_key}.input"] = graphs.x[:golden_clips]
        golden[f"{graphs.golden_key}.logits"] = graphs.expected[:, :golden_clips] if mode == "step" else graphs.expected[:golden_clips]
        for precision in table:
            t1 = time.perf_counter()
            ctx = PassContext(mode, frontend, graphs.x, calibration_data if precision.needs_calibration else None,
                              None, dict((precision_options or {}).get(precision.name, {})))
            proto = precision_graph(graphs, precision, ctx)
            err, atol, got = parity_gate(graphs, precision, proto, parity.source)
            if precision.name == "fp32":
                agree.append(float(np.mean(got.argmax(-1) == graphs.expected.argmax(-1))))
            record.update(ctx.record or {})
            mf = model_file(graphs, precision, proto, err, atol)
            files.append(mf)
            protos[mf.path] = proto
            rows.append(_summary_row(mf, (graphs.seconds if precision.name == "fp32" else 0.0) + time.perf_counter() - t1))
    calibration = manifest_extra.pop("calibration", None) or record or None
    manifest = assemble_manifest(mods, labels, modes, files, parity.source, agree, t_start,
                                 calibration=calibration, **manifest_extra)
    manifest, blobs = bundle_blobs(manifest, protos, golden)
    for row in rows:
        row.size_bytes = len(blobs[row.file])
    return manifest, blobs, rows


def _stamp(proto, manifest: Manifest, name: str):
    """The manifest identity hash (and a few facts) in the graph's metadata_props."""
    from onnx import helper

    mf = next(f for f in manifest.files if f.path == name)
    meta = {
        ONNX_METADATA_KEY: manifest.identity_sha256(),
        "kwsdeploy.schema_version": str(manifest.schema_version),
        "kwsdeploy.model": str(manifest.model.get("name", "")),
        "kwsdeploy.mode": mf.mode,
        "kwsdeploy.precision": mf.precision,
        "kwsdeploy.input_kind": mf.input_kind,
        "kwsdeploy.exporter": mf.exporter,
    }
    del proto.metadata_props[:]
    helper.set_model_props(proto, meta)
    proto.producer_name, proto.producer_version = "kwsdeploy", manifest.kwsdeploy_version
    return proto


# -- writing ------------------------------------------------------------------------------------
def _write_file(path: Path, data: bytes) -> None:
    """Write bytes and flush them to disk (a hook point for the interrupted-write test)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bundle(out_dir: str | Path, manifest: Manifest, blobs: Mapping[str, bytes], overwrite: bool = False,
                 inputs: Sequence[tuple[str, Path | None]] = ()) -> Path:
    """Write every file into a temp dir beside `out_dir`, then swap it into place (all or nothing).

    An existing bundle is replaced only with `overwrite`; a directory that is not a bundle never is."""
    out = Path(out_dir)
    for name in blobs:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"bundle file names must be plain names, got {name!r}.")
    with writing_dir(out, BUNDLE, overwrite, inputs) as tmp:
        for name, data in blobs.items():
            _write_file(tmp / name, data)
        _write_file(tmp / MANIFEST_NAME, manifest.to_json().encode())
    return out


def export_bundle(out_dir: str | Path, overwrite: bool = False, inputs: Sequence[tuple[str, Path | None]] = (),
                  **kwargs: Any) -> ExportResult:
    """`build_bundle(**kwargs)` then `write_bundle`: the output is checked first (no export is wasted on
    an --out that would be refused), parity failures raise before anything is written."""
    check_output_dir(Path(out_dir), BUNDLE, overwrite, inputs)
    manifest, blobs, rows = build_bundle(**kwargs)
    path = write_bundle(out_dir, manifest, blobs, overwrite=overwrite, inputs=inputs)
    return ExportResult(path=path, manifest=manifest, rows=rows)
