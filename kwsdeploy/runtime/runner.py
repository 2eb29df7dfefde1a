"""ONNX Runtime stream runner: numpy + onnxruntime only (never torch), so it runs on a device.

State lives in two sets of bound OrtValues used ping-pong by two pre-built IO bindings: step t
reads state set A and writes set B, step t+1 reads B and writes A. No state is copied between
steps; only the input packet is written into its bound buffer. A batch of B independent streams
runs in one call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from kwsdeploy.streaming.spec import LOGITS, NEW_STATE_PREFIX, STATE_PREFIX  # torch-free names

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
    """An InferenceSession on a file path or serialized bytes, with the chosen providers."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=resolve_providers(providers))


def split_packets(x: np.ndarray, packet: int) -> list[np.ndarray]:
    """Cut the last axis of `x` into consecutive packets of `packet` (a trailing partial packet is dropped)."""
    return [np.ascontiguousarray(p) for p in _packet_views(x, packet)]


def _packet_views(x: np.ndarray, packet: int) -> list[np.ndarray]:
    """`split_packets` without the copies: views of `x`, for a consumer that copies anyway."""
    return [x[..., i * packet:(i + 1) * packet] for i in range(x.shape[-1] // packet)]


class StepSession:
    """One step graph (`<data input>`, `state.*` -> `logits`, `new_state.*`) with state kept in OrtValues."""

    def __init__(
        self,
        model: str | Path | bytes,
        batch: int = 1,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}.")
        self.session = make_session(model, providers, threads)
        self.batch = int(batch)
        provider = self.session.get_providers()[0]
        self.device = _DEVICE_OF_PROVIDER.get(provider, "cpu")
        inputs = self.session.get_inputs()
        data = [i for i in inputs if not i.name.startswith(STATE_PREFIX)]
        if len(data) != 1:
            raise ValueError(f"a step graph has one data input besides state.*; got {[i.name for i in data]}.")
        self.input_name = data[0].name
        self.input_shape = self._concrete(data[0].shape)
        self.input_dtype = _ORT_TO_NUMPY[data[0].type]
        self.state_names = [i.name for i in inputs if i.name.startswith(STATE_PREFIX)]
        outputs = {o.name: o for o in self.session.get_outputs()}
        if LOGITS not in outputs:
            raise ValueError(f"a step graph must output {LOGITS!r}; outputs are {list(outputs)}.")
        for name in self.state_names:
            if NEW_STATE_PREFIX + name[len(STATE_PREFIX):] not in outputs:
                raise ValueError(f"state input {name!r} has no matching new_state output; this is not a kwsdeploy step graph (re-export it).")
        state_meta = {i.name: i for i in inputs if i.name in self.state_names}
        # Two state sets (ping-pong) + the input packet + logits, all allocated once.
        self._sets: list[list[ort.OrtValue]] = []
        self._arrays: list[list[np.ndarray]] = []  # CPU: the numpy arrays behind the OrtValues
        for _ in range(2):
            vals, arrs = [], []
            for name in self.state_names:
                shape = self._concrete(state_meta[name].shape)
                v, a = self._alloc(shape, _ORT_TO_NUMPY[state_meta[name].type])
                vals.append(v)
                arrs.append(a)
            self._sets.append(vals)
            self._arrays.append(arrs)
        self._in_val, self._in_arr = self._alloc(self.input_shape, self.input_dtype)
        self._out_shape = self._concrete(outputs[LOGITS].shape)
        self._out_dtype = _ORT_TO_NUMPY[outputs[LOGITS].type]
        self._out_val, self._out_arr = self._alloc(self._out_shape, self._out_dtype)
        self._bindings = [self._bind(src, dst) for src, dst in ((0, 1), (1, 0))]
        self._cur = 0
        self.reset()

    # -- set-up -----------------------------------------------------------------------------
    def _concrete(self, shape: Sequence) -> tuple[int, ...]:
        """The bound shape: symbolic (batch) axes become `self.batch`."""
        return tuple(self.batch if not isinstance(d, int) else int(d) for d in shape)

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
            b.bind_ortvalue_output(NEW_STATE_PREFIX + name[len(STATE_PREFIX):], val)
        return b

    # -- streaming --------------------------------------------------------------------------
    def reset(self, stream: int | None = None) -> None:
        """Zero the state of every stream, or of one stream (its batch row) only."""
        if stream is not None and not 0 <= stream < self.batch:
            raise ValueError(f"stream index {stream} out of range for batch {self.batch}.")
        for i, val in enumerate(self._sets[self._cur]):
            arr = self._arrays[self._cur][i]
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

    def step(self, packet: np.ndarray) -> np.ndarray:
        """Feed one packet [batch, ...] (batch 1 may drop the batch axis); returns logits [batch, classes]."""
        out = self._step(packet)
        return out.copy() if out is self._out_arr else out

    def _step(self, packet: np.ndarray) -> np.ndarray:
        """`step` returning the bound logits buffer itself on CPU (overwritten by the next step)."""
        x = np.asarray(packet, dtype=self.input_dtype)
        if x.ndim == len(self.input_shape) - 1 and self.batch == 1:
            x = x[None]
        if x.shape != self.input_shape:
            raise ValueError(
                f"{self.input_name} packet has shape {list(x.shape)}, expected {list(self.input_shape)} "
                f"(batch {self.batch}); cut the stream into packets of the bundle's packet size."
            )
        if self._in_arr is not None:
            np.copyto(self._in_arr, x)
        else:
            self._in_val.update_inplace(np.ascontiguousarray(x))
        self.session.run_with_iobinding(self._bindings[self._cur])
        self._cur ^= 1
        return self._out_arr if self._out_arr is not None else self._out_val.numpy()

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state (for inspection and tests)."""
        out = {}
        for name, val, arr in zip(self.state_names, self._sets[self._cur], self._arrays[self._cur]):
            out[name] = arr.copy() if arr is not None else val.numpy()
        return out

    def run(self, x: np.ndarray, reset: bool = True) -> np.ndarray:
        """Stream a whole input [batch, ..., T] packet by packet; logits per packet [P, batch, classes]."""
        if reset:
            self.reset()
        packets = _packet_views(np.asarray(x), self.input_shape[-1])
        out = np.empty((len(packets), *self._out_shape), dtype=self._out_dtype)
        for i, p in enumerate(packets):
            out[i] = self._step(p)  # written straight from the bound output buffer
        return out


class StreamRunner:
    """Stream features (or audio, for a --frontend bundle) through a bundle's step graph, keeping state."""

    def __init__(
        self,
        bundle_dir: str | Path,
        providers: Sequence[str] | None = None,
        batch: int = 1,
        precision: str = "fp32",
        input_kind: str | None = None,
        threads: int | None = None,
        check_hashes: bool = True,
    ) -> None:
        from kwsdeploy.runtime.bundle import load_bundle

        self.bundle = load_bundle(bundle_dir, check_hashes=check_hashes)
        self.manifest = self.bundle.manifest
        self.file = self.manifest.file("step", precision, input_kind)
        self.session = StepSession(self.bundle.path / self.file.path, batch, providers, threads)
        self.labels = list(self.manifest.labels)
        self.spec = self.manifest.stream

    @property
    def batch(self) -> int:
        """Independent streams per call."""
        return self.session.batch

    @property
    def input_name(self) -> str:
        """The step graph's data input: 'features' or 'audio' (a --frontend bundle)."""
        return self.session.input_name

    @property
    def packet_shape(self) -> tuple[int, ...]:
        """Shape of one packet, batch axis included."""
        return self.session.input_shape

    def reset(self, stream: int | None = None) -> None:
        """Zero every stream's state (or one stream's)."""
        self.session.reset(stream)

    def step(self, features_or_audio: np.ndarray) -> np.ndarray:
        """One packet in, logits [batch, classes] out; state is kept for the next call."""
        return self.session.step(features_or_audio)

    def run(self, x: np.ndarray, reset: bool = True) -> np.ndarray:
        """A whole input [batch, ..., T] streamed packet by packet: logits [packets, batch, classes]."""
        return self.session.run(x, reset)
