"""The runner contract every step backend implements (ONNX Runtime: ort.py, TensorRT: trt.py); torch-free.

A `StepRunner` streams packets through one step graph (`<data input>`, `state.*` -> `logits`,
`new_state.*`) and keeps the state between calls. Callers (the `stream` and `eval-stream` commands,
`verify`, the export parity gate, benchmarks, device bundles) use only this API:

    runner.step(packet)       # one packet [batch, *packet] (batch 1 may drop the axis) -> logits [batch, classes]
    runner.run(x, reset=True) # a whole input [batch, ..., T] cut into packets -> logits [packets, batch, classes]
    runner.reset(stream=None) # zero every stream's state, or one stream's (a batch row)
    runner.state()            # {state name: a copy of its array}
    runner.batch, runner.packet_shape (batch axis included), runner.input_name, runner.input_dtype,
    runner.logits_shape, runner.labels (list[str] | None), runner.spec (StreamSpec | None),
    runner.manifest (Manifest | None, set when opened from a bundle)
    runner.time_calls = True  # then every step appends its backend seconds to runner.call_seconds

A runner holds its streams' state and is not thread-safe: a call from a second thread while one is
running raises `ConcurrentUseError` (never interleaves). Give each thread its own runner, or serve
many streams from one thread as the rows of a batch runner.

`step()` is a template: it checks the packet (shape, dtype castable, finite values), calls the
backend's `_step_impl` and, when `time_calls` is set, records the seconds `_step_impl` took (the
backend call with its input copy; the checks excluded). A backend implements:

    _step_impl(x) -> logits    # x already checked: exactly `packet_shape`, `input_dtype`, C-contiguous;
                               # may return its own output buffer (step() copies, run() copies into its result)
    _reset_impl(stream)        # stream is None (all) or a valid row index
    _state_impl() -> dict[str, np.ndarray]

and calls `super().__init__(...)` with what it learned from its graph. `open_runner` in
`kwsdeploy.runtime.runners` picks a backend for a bundle.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import numpy as np


class PacketError(ValueError):
    """A packet the runner cannot take (wrong shape or dtype, NaN or infinity)."""


class ConcurrentUseError(RuntimeError):
    """Two threads called one runner at once: a runner holds its streams' state and is not thread-safe."""


def packet_views(x: np.ndarray, packet: int) -> list[np.ndarray]:
    """Views of consecutive packets of `packet` along the last axis (a trailing partial packet is dropped)."""
    return [x[..., i * packet:(i + 1) * packet] for i in range(x.shape[-1] // packet)]


def split_packets(x: np.ndarray, packet: int) -> list[np.ndarray]:
    """`packet_views` as contiguous copies."""
    return [np.ascontiguousarray(p) for p in packet_views(x, packet)]


class StepRunner:
    """Base of every step backend: packet checks, per-call timing and the streaming loop (see module doc)."""

    def __init__(
        self,
        *,
        batch: int,
        input_name: str,
        packet_shape: Sequence[int],
        input_dtype: Any,
        logits_shape: Sequence[int],
        labels: Sequence[str] | None = None,
        spec: Any = None,
        manifest: Any = None,
        check_finite: bool = True,
    ) -> None:
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}.")
        self.batch = int(batch)
        self.input_name = input_name
        self.packet_shape = tuple(int(d) for d in packet_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.logits_shape = tuple(int(d) for d in logits_shape)
        self.labels = list(labels) if labels is not None else None
        self.spec = spec
        self.manifest = manifest
        self.check_finite = bool(check_finite)
        self.time_calls = False
        self.call_seconds: list[float] = []
        self._busy = threading.Lock()  # held during a call: a second thread is refused, never interleaved

    # -- backend hooks --------------------------------------------------------------------------
    def _step_impl(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset_impl(self, stream: int | None) -> None:
        raise NotImplementedError

    def _state_impl(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- the contract -----------------------------------------------------------------------------
    def check_packet(self, packet: np.ndarray) -> np.ndarray:
        """The packet as the backend takes it: `packet_shape`, `input_dtype`, contiguous, finite."""
        x = np.asarray(packet)
        if x.dtype.kind not in "fiu" or (x.dtype.kind == "f" and self.input_dtype.kind != "f"):
            raise PacketError(f"{self.input_name} packet has dtype {x.dtype}, expected {self.input_dtype} (real numbers).")
        if x.ndim == len(self.packet_shape) - 1 and self.batch == 1:
            x = x[None]
        if x.shape != self.packet_shape:
            raise PacketError(
                f"{self.input_name} packet has shape {list(x.shape)}, expected {list(self.packet_shape)} "
                f"(batch {self.batch}); cut the stream into packets of the bundle's packet size."
            )
        if x.dtype != self.input_dtype or not x.flags.c_contiguous:  # (errstate costs ~2 us: only when casting)
            with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cast is caught as non-finite below
                x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if self.check_finite and not np.isfinite(x).all():
            raise PacketError(f"{self.input_name} packet contains NaN or infinity; check the audio or features fed in.")
        return x

    def _checked_step(self, packet: np.ndarray) -> np.ndarray:
        x = self.check_packet(packet)
        if not self.time_calls:
            return self._step_impl(x)
        t0 = time.perf_counter()
        out = self._step_impl(x)
        self.call_seconds.append(time.perf_counter() - t0)
        return out

    def _enter(self) -> None:
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError(
                "this runner is already in use by another thread: a runner holds its streams' state and is not "
                "thread-safe; give each thread its own runner (open_runner per thread), or serve many streams "
                "from one thread as the rows of a batch runner (batch=N, reset(stream=i)).")

    def step(self, packet: np.ndarray) -> np.ndarray:
        """One packet in, logits [batch, classes] out (a fresh array); state is kept for the next call."""
        self._enter()
        try:
            return np.array(self._checked_step(packet), copy=True)
        finally:
            self._busy.release()

    def run(self, x: np.ndarray, reset: bool = True) -> np.ndarray:
        """Stream a whole input [batch, ..., T] packet by packet: logits [packets, batch, classes]."""
        self._enter()
        try:
            return self._run(x, reset)
        finally:
            self._busy.release()

    def _run(self, x: np.ndarray, reset: bool) -> np.ndarray:
        if reset:
            self._reset_impl(None)
        packets = packet_views(np.asarray(x), self.packet_shape[-1])
        out = None
        for i, p in enumerate(packets):
            logits = self._checked_step(p)
            if out is None:
                out = np.empty((len(packets), *logits.shape), dtype=logits.dtype)
            out[i] = logits
        return out if out is not None else np.zeros((0, *self.logits_shape), dtype=np.float32)

    def reset(self, stream: int | None = None) -> None:
        """Zero the state of every stream, or of one stream (its batch row) only."""
        if stream is not None and not 0 <= stream < self.batch:
            raise ValueError(f"stream index {stream} out of range for batch {self.batch}.")
        self._enter()
        try:
            self._reset_impl(stream)
        finally:
            self._busy.release()

    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name (for inspection and tests)."""
        return self._state_impl()

    def clear_times(self) -> None:
        """Forget the recorded per-call seconds."""
        self.call_seconds = []
