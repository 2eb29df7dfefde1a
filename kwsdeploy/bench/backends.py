"""The runtime axis: how each runtime runs a subject, or the one-line reason it cannot here.

Every runtime gives a kwsdeploy.runtime `StepRunner` (the one runner contract: template `step()`
with packet checks and per-call timing, state carried inside): ONNX Runtime's `OrtStepRunner`, the
TensorRT backend registered in `kwsdeploy.runtime.runners.BACKENDS` when there is one, and torch
eager wrapped in the same contract. Precisions are the precision table's graph passes
(`kwsdeploy.precisions`; fp16, and INT8 recipes as they are added), plus 'int8': the calibration
package's calibration-free dynamic U8S8 cpu candidate.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("torch", "ort", "ort-int8", "tensorrt")


class Unavailable(RuntimeError):
    """This runtime or precision cannot run here; the message is the row's reason."""


def expand(runtimes: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(runtime, precision) pairs: 'ort-int8' is ONNX Runtime with the precision table's int8-cpu recipe
    (the calibration-free 'int8' where the table has none); the others x precisions."""
    from kwsdeploy.precisions import PRECISIONS

    ort_int8 = "int8-cpu" if "int8-cpu" in PRECISIONS else "int8"
    pairs: list[tuple[str, str]] = []
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise ValueError(f"Unknown runtime {rt!r}; choose from {', '.join(RUNTIMES)}.")
        for p in ([ort_int8] if rt == "ort-int8" else precisions):
            if p not in known_precisions():
                raise ValueError(f"Unknown precision {p!r}; choose from {', '.join(known_precisions())}.")
            pair = ("ort", p) if rt == "ort-int8" else (rt, p)
            if pair not in pairs:
                pairs.append(pair)
    return pairs


# -- graphs per precision --------------------------------------------------------------------------
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "QGemm", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
INT8_VARIANT = "dynamic-u8s8-rr"  # the calibration package's cpu candidate that needs no calibration data


def known_precisions() -> tuple[str, ...]:
    """fp32, fp16, int8 (a calibration-free INT8 graph) and every entry of this build's precision table."""
    from kwsdeploy.precisions import PRECISIONS

    return tuple(dict.fromkeys(("fp32", "fp16", "int8", *PRECISIONS)))


def _dynamic_int8(core):
    try:
        from kwsdeploy.calibration.cpu import build_candidate
        from kwsdeploy.calibration.qdq import name_nodes
    except ImportError:
        raise Unavailable("no INT8 recipe in this build (Step 6)") from None
    q = build_candidate(INT8_VARIANT, name_nodes(core), None)
    if not any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger") for n in q.graph.node):
        raise Unavailable(f"INT8 ({INT8_VARIANT}) quantizes no layer of this graph")
    return q


def _calibration(subject, calib_data):
    """The calibration source of a subject's INT8 table passes: clips of `calib_data` (a prepared corpus;
    None: the embedded demo corpus' train split), cached on the subject."""
    key = ("calibration", str(calib_data))
    if key not in subject._onnx:
        from kwsdeploy.calibration.passes import CalibrationSource, Int8Options, calibration_clips

        # Random weights have classes in name only (class0, ...): any words calibrate their ranges.
        labels = None if subject.weights == "random init" else subject.labels
        clips = calibration_clips(Int8Options(calib_data=calib_data), labels, subject.feature_config)
        subject._onnx[key] = CalibrationSource(clips=clips, feature_config=subject.feature_config)
    return subject._onnx[key]


def graph_for(subject, precision: str, calib_data=None, facts: dict | None = None):
    """The subject's ONNX graph in `precision`: the precision table's graph pass on the model graph
    (kwsdeploy.precisions; INT8 recipes calibrated on `calib_data` or the demo corpus), the frontend
    kept fp32 in front as bundles do. 'int8' is ONNX Runtime's dynamic U8S8 MatMuls with 7-bit
    weights (the calibration package's calibration-free cpu candidate). `facts` gets the recipe's choice."""
    from kwsdeploy.precisions import PRECISIONS, PassContext

    if precision == "fp32":
        return subject.onnx_graph()
    if precision == "int8":
        return subject.onnx_graph(_dynamic_int8)
    if precision not in PRECISIONS:
        raise Unavailable(f"no precision {precision!r} in this build (known: {', '.join(known_precisions())})")
    entry = PRECISIONS[precision]
    calib = _calibration(subject, calib_data) if entry.needs_calibration else None
    fn = entry.pass_fn()
    ctx = PassContext(mode="offline" if subject.key.mode == "offline" else "step", frontend=subject.key.frontend,
                      calibration=calib)
    proto = subject.onnx_graph(lambda core: fn(core, ctx))
    if calib is not None and facts is not None:
        chosen = [r.settings.get("chosen") for r in calib.results.values() if r.recipe == entry.recipe]
        facts["int8_recipe"] = f"{entry.recipe}: {chosen[-1]}" if chosen and chosen[-1] else entry.recipe
    return proto


def weight_bytes(proto) -> int:
    """Bytes of the graph's initializers and Constant tensors."""
    from onnx import numpy_helper

    total = sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR:
                total += numpy_helper.to_array(attr.t).nbytes
    return total


# -- runners ---------------------------------------------------------------------------------------
def torch_runner(subject, batch: int, device: str):
    """The torch module eager as a kwsdeploy.runtime StepRunner (same template step(), same timing)."""
    import torch

    from kwsdeploy.runtime.base import StepRunner

    class TorchStepRunner(StepRunner):
        def __init__(self) -> None:
            self.module = subject.module.to(device).eval()
            x = subject.packets(np.zeros(16000, dtype=np.float32), 1)[0]
            shape = (batch, *x.shape[1:])
            self._init = lambda: tuple(t.to(device) for t in subject.init_state(batch))
            self._state = self._init()
            with torch.inference_mode():
                out = self._forward(np.zeros(shape, dtype=np.float32))
            self._state = self._init()
            super().__init__(batch=batch, input_name=subject.input_kind, packet_shape=shape, input_dtype=np.float32,
                             logits_shape=out.shape, labels=subject.labels)

        def _forward(self, x: np.ndarray) -> np.ndarray:
            out = self.module(torch.from_numpy(x).to(device), *self._state)
            if isinstance(out, (tuple, list)):
                logits, *state = out
                self._state = tuple(state)
            else:
                logits = out
            if device != "cpu":
                torch.cuda.synchronize()
            return logits.cpu().numpy()

        def _step_impl(self, x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self._forward(x)

        def _reset_impl(self, stream) -> None:
            if stream is None:
                self._state = self._init()
            else:
                for t in self._state:
                    t[stream] = 0

        def _state_impl(self) -> dict:
            return {f"state.{i}": t.cpu().numpy().copy() for i, t in enumerate(self._state)}

    return TorchStepRunner()


def ort_runner(path: Path, batch: int, threads: int, device: str):
    """kwsdeploy.runtime's ONNX Runtime StepRunner (IO binding, ping-pong state)."""
    from kwsdeploy.runtime.ort import OrtStepRunner

    providers = ["CUDAExecutionProvider"] if device == "cuda" else None
    return OrtStepRunner(path, batch=batch, providers=providers, threads=threads)


def tensorrt_runner(path: Path, batch: int, threads: int, device: str, precision: str = "fp32"):
    """The TensorRT StepRunner registered in kwsdeploy.runtime.runners.BACKENDS, when this build has one."""
    if device != "cuda":
        raise Unavailable("TensorRT needs --device cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Unavailable("tensorrt is not installed (pip install 'kwsdeploy[trt]')") from None
    from kwsdeploy.runtime.runners import BACKENDS

    if "tensorrt" not in BACKENDS:
        raise Unavailable("no TensorRT runner in this build (Step 7)")
    import inspect

    module, name = BACKENDS["tensorrt"]
    cls = getattr(importlib.import_module(module), name)
    extra = {"precision": precision} if "precision" in inspect.signature(cls).parameters else {}
    return cls(path, batch=batch, threads=threads, **extra)


def check_device(runtime: str, device: str) -> None:
    """Unavailable when `runtime` cannot run on `device` here."""
    if device == "cpu":
        return
    if runtime == "torch":
        import torch

        if not torch.cuda.is_available():
            raise Unavailable("torch sees no CUDA device")
    if runtime == "ort":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Unavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")


def make_runner(runtime: str, precision: str, subject, batch: int, threads: int, device: str,
                workdir: Path, calib_data=None) -> tuple[Any, dict[str, Any]]:
    """A runner for one row and what the row reports about its graph (file size, nodes, weight bytes)."""
    check_device(runtime, device)
    if runtime == "torch":
        if precision != "fp32":
            raise Unavailable("torch rows are fp32 (the reference for parity)")
        seen, wbytes = set(), 0
        for t in (*subject.module.parameters(), *subject.module.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                wbytes += t.numel() * t.element_size()
        return torch_runner(subject, batch, device), {"file_bytes": None, "nodes": None, "weight_bytes": wbytes}
    from kwsdeploy.exporters.simplify import node_count

    recipe: dict[str, Any] = {}
    proto = graph_for(subject, precision, calib_data, recipe)
    k = subject.key
    path = workdir / f"{subject.card_name}-{k.mode}-{k.packet_frames}-{int(k.frontend)}-{precision}.onnx"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(proto.SerializeToString())
        tmp.replace(path)
    facts = {"file_bytes": path.stat().st_size, "nodes": node_count(proto), "weight_bytes": weight_bytes(proto),
             "integer_graph": any(n.op_type in INTEGER_OPS for n in proto.graph.node), **recipe}
    if runtime == "ort":
        return ort_runner(path, batch, threads, device), facts
    if runtime == "tensorrt":
        return tensorrt_runner(path, batch, threads, device, precision), facts
    raise Unavailable(f"unknown runtime {runtime!r}")


def scratch_dir() -> tempfile.TemporaryDirectory:
    """Where a run keeps its exported graphs (removed at the end)."""
    return tempfile.TemporaryDirectory(prefix="kwsdeploy-bench-")
