"""The ONNX Runtime `StepRunner`: numpy + onnxruntime only (never torch), so it runs on a device.

State lives in two sets of bound OrtValues used ping-pong by two pre-built IO bindings: step t
reads state set A and writes set B, step t+1 reads B and writes A. No state is copied between
steps; only the input packet is written into its bound buffer. A batch of B independent streams
runs in one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from kwsdeploy.contract import LOGITS, is_state_name, new_state_name
from kwsdeploy.runtime.base import StepRunner

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_DEVICE_OF_PROVIDER = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """CPU by default; any other requested provider must be available in this onnxruntime."""
    if not providers:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(f"ONNX Runtime provider(s) {missing} not available here; available: {available}.")
    return list(providers)


def make_session(
    model: str | Path | bytes, providers: Sequence[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An InferenceSession on a file path or serialized bytes, with the chosen providers and `threads`
    intra-op threads (None: kwsdeploy's default, 1; see kwsdeploy.threads)."""
    from kwsdeploy.threads import default_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=resolve_providers(providers))


def run_offline(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Logits of an offline (whole-clip) graph: its one input -> `logits`."""
    return session.run([LOGITS], {session.get_inputs()[0].name: x})[0]


class OrtStepRunner(StepRunner):
    """One step graph run by ONNX Runtime with its state kept in bound OrtValues (see module doc)."""

    def __init__(
        self,
        model: str | Path | bytes,
        batch: int = 1,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        spec: Any = None,
        manifest: Any = None,
    ) -> None:
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}.")
        self.session = make_session(model, providers, threads)
        self._batch = int(batch)
        self.device = _DEVICE_OF_PROVIDER.get(self.session.get_providers()[0], "cpu")
        inputs = self.session.get_inputs()
        data = [i for i in inputs if not is_state_name(i.name)]
        if len(data) != 1:
            raise ValueError(f"a step graph has one data input besides state.*; got {[i.name for i in data]}.")
        self.state_names = [i.name for i in inputs if is_state_name(i.name)]
        outputs = {o.name: o for o in self.session.get_outputs()}
        if LOGITS not in outputs:
            raise ValueError(f"a step graph must output {LOGITS!r}; outputs are {list(outputs)}.")
        for name in self.state_names:
            if new_state_name(name) not in outputs:
                raise ValueError(f"state input {name!r} has no matching new_state output; this is not a kwsdeploy step graph (re-export it).")
        if spec is None and manifest is not None:
            spec = getattr(manifest, "stream", None)
        state_shapes = {s.name: tuple(s.shape) for s in getattr(spec, "states", ())}
        self._shapes = {i.name: self._concrete(i.shape, state_shapes.get(i.name), i.name) for i in inputs}
        num_classes = getattr(spec, "num_classes", None) or (len(labels) if labels else None)
        super().__init__(
            batch=batch, input_name=data[0].name, packet_shape=self._shapes[data[0].name],
            input_dtype=_ORT_TO_NUMPY[data[0].type], logits_shape=self._logits_shape(outputs[LOGITS].shape, num_classes),
            labels=labels, spec=spec, manifest=manifest,
        )
        self._alloc_buffers({i.name: i for i in inputs}, outputs[LOGITS])
        self.reset()  # device buffers start uninitialised

    # -- set-up -----------------------------------------------------------------------------
    def _concrete(self, shape: Sequence, known: Sequence[int] | None = None, name: str = "") -> tuple[int, ...]:
        """The bound shape of an input: the leading axis is the runner's batch; the others are the
        graph's static sizes or, where the graph left a symbol, the spec's (`known`, batch excluded)."""
        inner = list(shape)[1:]
        if known is not None and len(known) == len(inner):
            inner = [int(d) if isinstance(d, int) and d > 0 else int(k) for d, k in zip(inner, known)]
        loose = [d for d in inner if not isinstance(d, int) or d <= 0]
        if loose:
            raise ValueError(f"graph input {name!r} has symbolic non-batch axis/axes {loose} and no stream spec gives "
                             "their sizes: pass spec=/manifest= or re-export the graph (static inner axes).")
        return (self._batch, *(int(d) for d in inner))

    def _logits_shape(self, shape: Sequence, num_classes: int | None) -> tuple[int, ...]:
        """Logits are [batch, num_classes]: the class axis from the graph when static, else from the
        spec/labels, else from one zero-input run of the graph."""
        inner = list(shape)[1:]
        if len(inner) == 1 and num_classes and not (isinstance(inner[0], int) and inner[0] > 0):
            inner = [int(num_classes)]
        if all(isinstance(d, int) and d > 0 for d in inner) and len(shape) > 0:
            return (self._batch, *(int(d) for d in inner))
        feeds = {i.name: np.zeros(self._shapes[i.name], dtype=_ORT_TO_NUMPY[i.type]) for i in self.session.get_inputs()}
        out = self.session.run([LOGITS], feeds)[0]
        if out.ndim < 1 or out.shape[0] != self._batch:
            raise ValueError(f"graph output {LOGITS!r} has shape {list(out.shape)} for batch {self._batch}; "
                             "a step graph's logits are [batch, num_classes] (re-export it).")
        return tuple(int(d) for d in out.shape)

    def _alloc_buffers(self, inputs: dict, logits) -> None:
        """Two state sets (ping-pong) + the input packet + logits, all allocated once, and two bindings."""
        self._sets: list[list[ort.OrtValue]] = []
        self._arrays: list[list[np.ndarray | None]] = []  # CPU: the numpy arrays behind the OrtValues
        for _ in range(2):
            vals, arrs = [], []
            for name in self.state_names:
                v, a = self._alloc(self._shapes[name], _ORT_TO_NUMPY[inputs[name].type])
                vals.append(v)
                arrs.append(a)
            self._sets.append(vals)
            self._arrays.append(arrs)
        self._in_val, self._in_arr = self._alloc(self.packet_shape, self.input_dtype)
        self._out_val, self._out_arr = self._alloc(self.logits_shape, _ORT_TO_NUMPY[logits.type])
        self._bindings = [self._bind(src, dst) for src, dst in ((0, 1), (1, 0))]
        self._cur = 0

    def _alloc(self, shape: tuple[int, ...], dtype) -> tuple[ort.OrtValue, np.ndarray | None]:
        if self.device == "cpu":
            arr = np.zeros(shape, dtype=dtype)
            return ort.OrtValue.ortvalue_from_numpy(arr), arr  # shares arr's memory
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0), None

    def _bind(self, src: int, dst: int) -> ort.IOBinding:
        b = self.session.io_binding()
        b.bind_ortvalue_input(self.input_name, self._in_val)
        for name, val in zip(self.state_names, self._sets[src]):
            b.bind_ortvalue_input(name, val)
        b.bind_ortvalue_output(LOGITS, self._out_val)
        for name, val in zip(self.state_names, self._sets[dst]):
            b.bind_ortvalue_output(new_state_name(name), val)
        return b

    # -- StepRunner hooks -------------------------------------------------------------------
    def _step_impl(self, x: np.ndarray) -> np.ndarray:
        """Write the packet into its bound buffer, run, flip the state sets; on CPU the bound logits."""
        if self._in_arr is not None:
            np.copyto(self._in_arr, x)
        else:
            self._in_val.update_inplace(x)
        self.session.run_with_iobinding(self._bindings[self._cur])
        self._cur ^= 1
        return self._out_arr if self._out_arr is not None else self._out_val.numpy()

    def _reset_impl(self, stream: int | None) -> None:
        for val, arr in zip(self._sets[self._cur], self._arrays[self._cur]):
            if arr is not None:
                if stream is None:
                    arr.fill(0)
                else:
                    arr[stream] = 0
            else:
                host = np.zeros(val.shape(), dtype=_ORT_TO_NUMPY[val.data_type()]) if stream is None else val.numpy()
                if stream is not None:
                    host[stream] = 0
                val.update_inplace(host)

    def _state_impl(self) -> dict[str, np.ndarray]:
        return {
            name: arr.copy() if arr is not None else val.numpy()
            for name, val, arr in zip(self.state_names, self._sets[self._cur], self._arrays[self._cur])
        }
