"""The runtime axis: how each runtime runs a subject, or the one-line reason it cannot here.

Every runtime gives a runner with `reset()` and `step(batch_input) -> logits [B, classes]` (state
carried inside). ONNX Runtime rows go through kwsdeploy.runtime's runner (IO binding, ping-pong
state); precisions come from graph passes (fp16 here, INT8 from the calibration package when it
exists); TensorRT from kwsdeploy.runtime's TensorRT runner when it exists and a GPU is there.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("torch", "ort", "ort-int8", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


class Unavailable(RuntimeError):
    """This runtime or precision cannot run here; the message is the row's reason."""


def expand(runtimes: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(runtime, precision) pairs: 'ort-int8' is ONNX Runtime with the INT8 graph; the others x precisions."""
    pairs: list[tuple[str, str]] = []
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise ValueError(f"Unknown runtime {rt!r}; choose from {', '.join(RUNTIMES)}.")
        for p in (["int8"] if rt == "ort-int8" else precisions):
            if p not in PRECISIONS:
                raise ValueError(f"Unknown precision {p!r}; choose from {', '.join(PRECISIONS)}.")
            pair = ("ort", "int8") if rt == "ort-int8" else (rt, p)
            if pair not in pairs:
                pairs.append(pair)
    return pairs


# -- graphs per precision --------------------------------------------------------------------------
def _int8_pass():
    """The INT8 graph pass of this build's precision table, or Unavailable."""
    for module, attr in (("kwsdeploy.exporters.precisions", "PRECISIONS"), ("kwsdeploy.calibration.recipes", "RECIPES")):
        try:
            table = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        for name in ("int8-cpu", "int8"):
            if name in table:
                return table[name]
    raise Unavailable("no INT8 recipe in this build (Step 6)")


def graph_for(subject, precision: str):
    """The subject's ONNX graph in `precision`."""
    proto = subject.onnx_fp32()
    if precision == "fp32":
        return proto
    if precision == "fp16":
        from kwsdeploy.exporters.onnx import to_fp16

        return to_fp16(proto)  # fp16 arithmetic (frontend included), fp32 I/O
    entry = _int8_pass()
    fn = getattr(entry, "apply", None) or getattr(entry, "graph_pass", None) or entry
    return fn(proto)


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
class TorchRunner:
    """The torch module eager, state carried between calls."""

    def __init__(self, subject, batch: int, device: str) -> None:
        import torch

        self.torch = torch
        self.subject, self.batch, self.device = subject, batch, device
        self.module = subject.module.to(device).eval()
        self.reset()

    def reset(self) -> None:
        self.state = tuple(t.to(self.device) for t in self.subject.init_state(self.batch))

    def step(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device), *self.state)
            if isinstance(out, (tuple, list)):
                logits, *state = out
                self.state = tuple(state)
            else:
                logits = out
            if self.device != "cpu":
                torch.cuda.synchronize()
            return logits.cpu().numpy()

    def close(self) -> None:
        self.module.to("cpu")


class OrtRunner:
    """kwsdeploy.runtime's ONNX Runtime step session on a graph file."""

    def __init__(self, path: Path, batch: int, threads: int, device: str) -> None:
        from kwsdeploy.runtime.runner import StepSession

        providers = ["CUDAExecutionProvider"] if device == "cuda" else None
        self.session = StepSession(path, batch=batch, providers=providers, threads=threads)

    def reset(self) -> None:
        self.session.reset()

    def step(self, x: np.ndarray) -> np.ndarray:
        return self.session.step(x)

    def close(self) -> None:
        self.session = None


def _tensorrt_runner(path: Path, batch: int, threads: int, device: str):
    if device != "cuda":
        raise Unavailable("TensorRT needs --device cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Unavailable("tensorrt is not installed (pip install 'kwsdeploy[trt]')") from None
    for module in ("kwsdeploy.runtime.tensorrt", "kwsdeploy.runtime.trt"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, "TensorRTRunner", None) or getattr(mod, "TrtRunner", None)
        if cls is not None:
            return cls.from_onnx(path, batch=batch) if hasattr(cls, "from_onnx") else cls(path, batch=batch)
    raise Unavailable("no TensorRT runner in this build (Step 7)")


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
                workdir: Path) -> tuple[Any, dict[str, Any]]:
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
        return TorchRunner(subject, batch, device), {"file_bytes": None, "nodes": None, "weight_bytes": wbytes}
    from kwsdeploy.exporters.simplify import node_count

    proto = graph_for(subject, precision)
    k = subject.key
    path = workdir / f"{subject.card_name}-{k.mode}-{k.packet_frames}-{int(k.frontend)}-{precision}.onnx"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(proto.SerializeToString())
        tmp.replace(path)
    facts = {"file_bytes": path.stat().st_size, "nodes": node_count(proto), "weight_bytes": weight_bytes(proto)}
    if runtime == "ort":
        return OrtRunner(path, batch, threads, device), facts
    if runtime == "tensorrt":
        return _tensorrt_runner(path, batch, threads, device), facts
    raise Unavailable(f"unknown runtime {runtime!r}")


def scratch_dir() -> tempfile.TemporaryDirectory:
    """Where a run keeps its exported graphs (removed at the end)."""
    return tempfile.TemporaryDirectory(prefix="kwsdeploy-bench-")
