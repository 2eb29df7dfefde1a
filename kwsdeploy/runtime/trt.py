"""TensorRT step runner (a `StepRunner`): numpy + TensorRT + cuda-python, never torch.

State lives in two sets of device buffers (`kwsdeploy.trt.buffers`): step t reads set t%2 and
writes the other, so nothing is copied between steps; only the packet goes host -> device and the
logits device -> host, through pinned host buffers. Each step binds its tensors with
`set_tensor_address` and runs `execute_async_v3` on one CUDA stream; with `cuda_graph=True` the
whole step (copy in, execute, copy out) is captured once per state set and replayed, falling back
to plain launches when the engine cannot be captured. TensorRT and cuda-python are imported when a
runner is made.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kwsdeploy.runtime.base import StepRunner
from kwsdeploy.trt.buffers import INPUT_KEY, LOGITS_KEY, BufferPlan, IoTensor, buffer_plan, state_key
from kwsdeploy.trt.lazy import cuda_check, import_cudart, import_tensorrt


def find_engine(model_path: str | Path, precision: str, trt_version: str, manifest: Any = None) -> Path | None:
    """The engine for the installed TensorRT: an .engine path as is; for a bundle's ONNX file, the
    manifest's engine entry of that precision built by this TensorRT major.minor, else
    `model.<precision>.trt<version>.engine` beside it; None when there is none."""
    from kwsdeploy.trt.plan import engine_file_name
    from kwsdeploy.trt.versions import TrtVersion

    path = Path(model_path)
    if path.suffix == ".engine":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such engine file.")
        return path
    want = TrtVersion.parse(trt_version)
    for f in getattr(manifest, "files", ()) or ():
        if (getattr(f, "format", "onnx") == "engine" and f.mode == "step" and f.precision == precision
                and TrtVersion.parse(f.engine.tensorrt_version) == want and (path.parent / f.path).is_file()):
            return path.parent / f.path
    engine = path.with_name(engine_file_name(precision, trt_version))
    return engine if engine.is_file() else None


def stream_handle(stream: Any) -> Any:
    """What execute_async_v3 takes: the stream's integer handle (cuda-python's cudaStream_t converts)."""
    try:
        return int(stream)
    except (TypeError, ValueError):
        return stream


def _host_array(ptr: int, nbytes: int, shape: Sequence[int], dtype: str) -> np.ndarray:
    """A numpy view of pinned host memory."""
    buf = (ctypes.c_byte * nbytes).from_address(ptr)
    return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(tuple(shape))


class TrtStepRunner(StepRunner):
    """One step engine streamed packet by packet, state kept in swapped device buffers."""

    def __init__(
        self,
        model_path: str | Path,
        batch: int = 1,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        spec: Any = None,
        manifest: Any = None,
        precision: str | None = None,
        cuda_graph: bool = True,
        device: int = 0,
        build_missing: bool = True,
    ) -> None:
        trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        cuda_check(cudart.cudaSetDevice(device))
        if precision is None:  # the precision of the manifest file open_runner picked, else fp32
            files = getattr(manifest, "files", ()) or ()
            precision = next((f.precision for f in files if f.path == Path(model_path).name), "fp32")
        self.precision = precision
        engine = find_engine(model_path, precision, trt.__version__, manifest)
        self.engine_note = ""
        if engine is not None:
            self.engine_path, data = engine, engine.read_bytes()
        elif build_missing:  # e.g. a benchmark's bare graph: build for this batch, keep it in memory only
            from kwsdeploy.trt.builder import build_in_memory
            from kwsdeploy.trt.plan import engine_file_name

            self.engine_path = Path(model_path)
            data = build_in_memory(model_path, precision, max_batch=batch)
            self.engine_note = (f"no {engine_file_name(precision, trt.__version__)} beside {self.engine_path.name}: "
                                "built an engine in memory (not saved)")
        else:
            bundle = Path(model_path).parent
            raise FileNotFoundError(
                f"{bundle}: no {precision} engine for TensorRT {trt.__version__}; build it with "
                f"'kwsdeploy engine build {bundle} --precision {precision}'."
            )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RuntimeError(f"{self.engine_path}: TensorRT {trt.__version__} could not load this engine "
                               "(built by another TensorRT version or for another GPU?); rebuild it on this device.")
        self._context = self._engine.create_execution_context()
        tensors = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            tensors.append(IoTensor(
                name, self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                tuple(self._engine.get_tensor_shape(name)), np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name,
            ))
        self.plan: BufferPlan = buffer_plan(tensors, batch)
        for name, shape in self.plan.input_shapes().items():
            if not self._context.set_input_shape(name, shape):
                raise ValueError(f"{self.engine_path.name}: batch {batch} is outside the engine's profile for {name!r}; "
                                 f"rebuild with 'kwsdeploy engine build --max-batch {batch}'.")
        self._stream = cuda_check(cudart.cudaStreamCreate())
        self._ptrs = {key: cuda_check(cudart.cudaMalloc(max(n, 1))) for key, n in self.plan.allocations()}
        self._host_in_ptr = cuda_check(cudart.cudaMallocHost(self.plan.input.nbytes))
        self._host_out_ptr = cuda_check(cudart.cudaMallocHost(self.plan.logits.nbytes))
        self._host_in = _host_array(self._host_in_ptr, self.plan.input.nbytes, self.plan.input.shape, self.plan.input.dtype)
        self._host_out = _host_array(self._host_out_ptr, self.plan.logits.nbytes, self.plan.logits.shape,
                                     self.plan.logits.dtype)
        self._parity = 0
        self._graphs: list[Any] = []
        self.cuda_graph_note = ""
        super().__init__(
            batch=batch, input_name=self.plan.input.name, packet_shape=self.plan.input.shape,
            input_dtype=self.plan.input.dtype, logits_shape=self.plan.logits.shape, labels=labels, spec=spec,
            manifest=manifest,
        )
        self._zero_all()
        for parity in (0, 1):  # one launch per binding before any capture (TensorRT's advice)
            self._launch(parity)
        cuda_check(cudart.cudaStreamSynchronize(self._stream))
        if cuda_graph:
            self._capture()
        self._zero_all()
        self._parity = 0

    # -- CUDA plumbing ----------------------------------------------------------------------------
    def _bind(self, parity: int) -> None:
        for name, ptr in self.plan.addresses(self._ptrs, parity).items():
            self._context.set_tensor_address(name, ptr)

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        cuda_check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    def _launch(self, parity: int) -> None:
        """Copy the packet in, run the engine on state set `parity`, copy the logits out (all async)."""
        rt = self._cudart
        self._copy(self._ptrs[INPUT_KEY], self._host_in_ptr, self.plan.input.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        self._bind(parity)
        if not self._context.execute_async_v3(stream_handle(self._stream)):
            raise RuntimeError(f"{self.engine_path.name}: execute_async_v3 failed (see TensorRT's log).")
        self._copy(self._host_out_ptr, self._ptrs[LOGITS_KEY], self.plan.logits.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)

    def _capture(self) -> None:
        """One CUDA graph per state set; on any failure keep plain launches and say why."""
        rt = self._cudart
        graphs = []
        try:
            for parity in (0, 1):
                cuda_check(rt.cudaStreamBeginCapture(self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
                try:
                    self._launch(parity)
                finally:
                    graph = cuda_check(rt.cudaStreamEndCapture(self._stream))
                graphs.append((graph, cuda_check(rt.cudaGraphInstantiate(graph, 0))))
        except Exception as exc:  # engines with data-dependent work cannot be captured
            for graph, exe in graphs:
                rt.cudaGraphExecDestroy(exe)
                rt.cudaGraphDestroy(graph)
            self.cuda_graph_note = f"CUDA graph capture failed ({exc}); plain launches"
            return
        self._graphs = graphs

    def _zero_all(self) -> None:
        for key, n in self.plan.allocations():
            if key not in (INPUT_KEY, LOGITS_KEY):
                cuda_check(self._cudart.cudaMemsetAsync(self._ptrs[key], 0, n, self._stream))
        cuda_check(self._cudart.cudaStreamSynchronize(self._stream))

    # -- StepRunner hooks -------------------------------------------------------------------------
    def _step_impl(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._host_in, x)
        if self._graphs:
            cuda_check(self._cudart.cudaGraphLaunch(self._graphs[self._parity][1], self._stream))
        else:
            self._launch(self._parity)
        cuda_check(self._cudart.cudaStreamSynchronize(self._stream))
        self._parity ^= 1
        return self._host_out

    def _reset_impl(self, stream: int | None) -> None:
        for st in self.plan.states:
            ptr = self._ptrs[state_key(st.name, self._parity)]
            if stream is None:
                cuda_check(self._cudart.cudaMemsetAsync(ptr, 0, st.nbytes, self._stream))
            else:
                cuda_check(self._cudart.cudaMemsetAsync(ptr + stream * st.row_bytes, 0, st.row_bytes, self._stream))
        cuda_check(self._cudart.cudaStreamSynchronize(self._stream))

    def _state_impl(self) -> dict[str, np.ndarray]:
        out = {}
        for st in self.plan.states:
            host = np.empty(st.shape, dtype=st.dtype)
            cuda_check(self._cudart.cudaMemcpy(host.ctypes.data, self._ptrs[state_key(st.name, self._parity)], st.nbytes,
                                               self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
            out[st.name] = host
        return out

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether steps replay captured CUDA graphs."""
        return bool(self._graphs)

    def close(self) -> None:
        """Free the device and pinned buffers, graphs and stream (also at garbage collection)."""
        rt = getattr(self, "_cudart", None)
        if rt is None:
            return
        for graph, exe in getattr(self, "_graphs", []):
            rt.cudaGraphExecDestroy(exe)
            rt.cudaGraphDestroy(graph)
        self._graphs = []
        for ptr in getattr(self, "_ptrs", {}).values():
            rt.cudaFree(ptr)
        self._ptrs = {}
        for name in ("_host_in_ptr", "_host_out_ptr"):
            if getattr(self, name, None):
                rt.cudaFreeHost(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_stream", None) is not None:
            rt.cudaStreamDestroy(self._stream)
            self._stream = None
        self._cudart = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
