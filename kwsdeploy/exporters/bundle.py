"""Build and write an export bundle: ONNX graphs per mode and precision, parity-checked against
torch at export, golden inputs/logits for `kwsdeploy verify`, and the manifest, written atomically
(temp dir + rename: an interrupted export leaves neither a bundle nor a temp dir behind).
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
import torch
from torch import nn

from kwsdeploy import tolerances
from kwsdeploy.atomic import BUNDLE, check_output_dir, writing_dir
from kwsdeploy.config import FeatureConfig
from kwsdeploy.manifest import (
    GOLDEN_NAME,
    MANIFEST_NAME,
    ONNX_METADATA_KEY,
    Manifest,
    ModelFile,
    TensorInfo,
    sha256_bytes,
)

FILE_NAMES = {
    ("step", "fp32"): "model.onnx",
    ("step", "fp16"): "model.fp16.onnx",
    ("offline", "fp32"): "model.offline.onnx",
    ("offline", "fp16"): "model.offline.fp16.onnx",
}


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


# -- torch reference --------------------------------------------------------------------------
def torch_stream(step: nn.Module, init_state: Sequence[torch.Tensor], x: np.ndarray, packet: int) -> np.ndarray:
    """Run a torch step module over `x` [B, ..., T] packet by packet: logits [packets, B, classes]."""
    from kwsdeploy.runtime.base import split_packets

    state = tuple(init_state)
    out = []
    with torch.no_grad():
        for p in split_packets(x, packet):
            logits, *state = step(torch.from_numpy(p), *state)
            out.append(logits.float().numpy())
    return np.stack(out)


def _ort_stream(proto_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from kwsdeploy.runtime.ort import OrtStepRunner

    return OrtStepRunner(proto_bytes, batch=x.shape[0], threads=1).run(x)


def _ort_offline(proto_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from kwsdeploy.runtime.ort import make_session, run_offline

    return run_offline(make_session(proto_bytes, threads=1), x)


def _clip_frames(features: np.ndarray, frames: int) -> np.ndarray:
    """[N, n_mfcc, T] -> [N, 1, n_mfcc, frames] (cut or zero-padded at the end)."""
    f = features[..., :frames]
    if f.shape[-1] < frames:
        f = np.pad(f, [(0, 0)] * (f.ndim - 1) + [(0, frames - f.shape[-1])])
    return np.ascontiguousarray(f[:, None]).astype(np.float32)


def model_info(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's model card: registry facts when the model has a card, plus `extra`."""
    from kwsdeploy.models.registry import count_params

    info: dict[str, Any] = {
        "name": getattr(model, "model_name", type(model).__name__),
        "family": getattr(model, "family", ""),
        "num_classes": int(getattr(model, "num_classes", 0)) or None,
        "n_mfcc": int(getattr(model, "n_mfcc", 40)),
        "params": count_params(model),
    }
    try:
        from kwsdeploy.models.registry import get_card

        card = get_card(info["name"])
        info.update(streaming=card.streaming, reference=card.reference, config=dict(card.config))
    except (KeyError, ImportError):
        pass
    info.update(extra or {})
    return info


# -- building -----------------------------------------------------------------------------------
def build_bundle(
    model: nn.Module,
    labels: Sequence[str],
    feature_config: FeatureConfig,
    parity: ParityData,
    modes: Sequence[str] = ("step",),
    frontend: bool = False,
    fp16: bool = False,
    smodel: nn.Module | None = None,
    frontend_step: nn.Module | None = None,
    frontend_offline: nn.Module | None = None,
    hop_frames: int | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    accuracy: Mapping[str, Any] | None = None,
    model_extra: Mapping[str, Any] | None = None,
    opset: int | None = None,
    exporter: str | None = None,
    golden_clips: int = 2,
) -> tuple[Manifest, dict[str, bytes], list[SummaryRow]]:
    """Export, simplify, check and parity-test every requested graph; nothing touches the disk.

    Raises ParityError when any graph's max abs logit error exceeds its tolerance.
    """
    from kwsdeploy.exporters import onnx as ox
    from kwsdeploy.exporters.simplify import node_count, op_histogram

    opset = opset or ox.DEFAULT_OPSET
    exporter = exporter or ox.DEFAULT_EXPORTER
    t_start = time.perf_counter()
    model = model.eval()
    if "step" in modes and smodel is None:
        from kwsdeploy.streaming.convert import to_streaming

        options = {"packet_frames": hop_frames} if hop_frames else {}  # windowed hop or exact packet
        smodel = to_streaming(model, feature_config=feature_config, **options)
    if smodel is not None:
        smodel = smodel.eval()
    if "step" in modes and not feature_config.causal and not frontend:
        raise ValueError(
            "This model uses the reference frontend (top_db relative to each window), so its step graph "
            "takes audio: export it with --frontend (the window's clamp and DCT run inside the graph)."
        )
    if frontend and "step" in modes and frontend_step is None:
        from kwsdeploy.streaming.pipeline import make_frontend

        frontend_step = make_frontend(smodel)
    if frontend and "offline" in modes and frontend_offline is None:
        from kwsdeploy.features import MFCC

        frontend_offline = MFCC(feature_config).eval()
    kind = "audio" if frontend else "features"
    data = parity.audio if frontend else parity.features
    if data is None:
        raise ValueError(f"parity needs {kind} clips ({'--frontend' if frontend else 'feature'} export); none were given.")
    data = np.ascontiguousarray(data, dtype=np.float32)
    precisions = ("fp32", "fp16") if fp16 else ("fp32",)

    files: list[ModelFile] = []
    protos: dict[str, Any] = {}
    golden: dict[str, np.ndarray] = {}
    rows: list[SummaryRow] = []
    agree: list[float] = []
    for mode in modes:
        t0 = time.perf_counter()
        if mode == "step":
            spec = smodel.stream_spec
            step_mod: nn.Module = smodel
            states = list(smodel.init_state(data.shape[0]))
            packet = spec.packet_frames
            if frontend:
                step_mod = ox.FrontendStep(frontend_step, smodel).eval()
                fs = ox.frontend_state_spec(frontend_step, feature_config)
                states = [torch.zeros(data.shape[0], *fs.shape), *states]
                packet = spec.packet_frames * feature_config.hop_length
            core32 = ox.export_step(smodel, opset=opset, exporter=exporter)
            front = ox.export_frontend_step(frontend_step, spec, opset, exporter) if frontend else None
            x = data
            expected = torch_stream(step_mod, states, x, packet)
            run = _ort_stream
        elif mode == "offline":
            if frontend:
                x = data[:, : feature_config.clip_samples]
                if x.shape[1] < feature_config.clip_samples:
                    x = np.pad(x, [(0, 0), (0, feature_config.clip_samples - x.shape[1])])
                module: nn.Module = ox.FrontendOffline(frontend_offline, model).eval()
            else:
                x = _clip_frames(data, feature_config.clip_frames)
                module = model
            x = np.ascontiguousarray(x, dtype=np.float32)
            core32 = ox.export_offline(model, clip_frames=feature_config.clip_frames, opset=opset, exporter=exporter)
            front = (
                ox.export_frontend_offline(frontend_offline, feature_config.clip_samples, opset, exporter)
                if frontend else None
            )
            with torch.no_grad():
                expected = module(torch.from_numpy(x)).float().numpy()
            run = _ort_offline
        else:
            raise ValueError(f"mode must be 'step' or 'offline', got {mode!r}.")
        seconds_export = time.perf_counter() - t0
        prefix = f"{mode}.{kind}"
        golden[f"{prefix}.input"] = x[:golden_clips]
        golden[f"{prefix}.logits"] = expected[:, :golden_clips] if mode == "step" else expected[:golden_clips]
        for precision in precisions:
            t1 = time.perf_counter()
            # fp16 converts the model only: a frontend stays fp32 in front of it.
            core = core32 if precision == "fp32" else ox.to_fp16(core32)
            proto = ox.attach_frontend(front, core) if front is not None else core
            ox.check_graph(proto)
            got = run(proto.SerializeToString(), x)
            err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
            if precision != "fp32":
                atol = tolerances.ONNX_FP16_PARITY_ATOL
            elif frontend:  # float32 STFT rounding in quiet mel bands (see tolerances)
                atol = tolerances.ONNX_FRONTEND_PARITY_ATOL
            else:
                atol = tolerances.ONNX_PARITY_ATOL
            name = FILE_NAMES[(mode, precision)]
            if not err <= atol:  # also catches NaN
                raise ParityError(
                    f"{name}: ONNX Runtime vs torch max abs logit difference {err:.3g} exceeds {atol:g} "
                    f"({mode}, {precision}, {parity.source or 'parity clips'}); nothing was written."
                )
            if precision == "fp32":
                agree.append(float(np.mean(got.argmax(-1) == expected.argmax(-1))))
            ins, outs = ox.io_info(proto)
            files.append(ModelFile(
                path=name, mode=mode, precision=precision, input_kind=kind, opset=ox.opset_of(proto),
                inputs=tuple(TensorInfo(**d) for d in ins), outputs=tuple(TensorInfo(**d) for d in outs),
                nodes=node_count(proto), op_histogram=op_histogram(proto), parity_max_abs=err,
                parity_atol=atol, golden=prefix, exporter=ox.exporter_of(proto),
            ))
            protos[name] = proto
            rows.append(SummaryRow(name, 0, ox.opset_of(proto), [d["name"] for d in ins], [d["name"] for d in outs],
                                   node_count(proto), err, atol,
                                   (seconds_export if precision == "fp32" else 0.0) + time.perf_counter() - t1))

    import kwsdeploy

    acc = dict(accuracy or {})
    acc["onnx_vs_torch_top1_agreement"] = float(np.mean(agree)) if agree else None
    manifest = Manifest(
        model=model_info(model, model_extra),
        labels=tuple(labels),
        feature_config=feature_config,
        stream=smodel.stream_spec if smodel is not None and "step" in modes else None,
        files=tuple(files),
        checkpoint=dict(checkpoint or {}),
        parity_data=parity.source,
        accuracy=acc,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        kwsdeploy_version=kwsdeploy.__version__,
        export_seconds=round(time.perf_counter() - t_start, 3),
    )
    blobs = {name: _stamp(proto, manifest, name).SerializeToString() for name, proto in protos.items()}
    buf = io.BytesIO()
    np.savez(buf, **golden)
    blobs[GOLDEN_NAME] = buf.getvalue()
    manifest = dataclasses.replace(
        manifest,
        hashes={n: sha256_bytes(b) for n, b in blobs.items()},
        sizes={n: len(b) for n, b in blobs.items()},
    )
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
