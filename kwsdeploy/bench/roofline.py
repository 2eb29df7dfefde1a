"""The physical bound of a row, from this machine's memory bandwidth and GEMM peak, measured once per run.

bound = max(bytes / bandwidth at that working-set size, MACs / GEMM peak of the precision), where the
bytes are those a call must move: the graph's weights, plus the state it reads and the new state it
writes (2 x state bytes per stream x batch; at batch 64 the reference-size KWM's SSM state, 19 MB in
and 19 MB out, outweighs its 12 MB of weights). Elementwise work (exp(dt A), the state update) is
counted in the MACs at the GEMM peak, an optimistic roof for it. Bandwidth: the best of a few numpy copies of a buffer of each size (read + write bytes counted), so a
working set that fits in cache gets cache bandwidth. Peak: one ONNX Runtime MatMul (fp32) or
MatMulInteger (uint8 x int8) of 256 x 512 x 512 at the run's thread count, best of a few calls. At 1
thread both are timed in the calling thread's CPU time, so that time slices given to other jobs of a
shared machine do not lower them (a wall-time 64 MiB copy measured 2.8 GB/s under load).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

SIZES_BYTES = (16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)
GEMM_SHAPE = (256, 512, 512)  # M, K, N
METHOD = " ".join(__doc__.split("\n\n")[1].split())


@dataclass(frozen=True)
class Machine:
    """Bandwidth (bytes/s) by buffer size and GEMM peaks (MAC/s) by precision."""

    bandwidth: dict[int, float]
    peak_macs: dict[str, float]
    threads: int
    method: str = METHOD

    def bandwidth_at(self, working_set: int) -> float:
        """Bandwidth of the smallest measured buffer at least `working_set` bytes (the largest past all)."""
        sizes = sorted(self.bandwidth)
        size = next((s for s in sizes if s >= working_set), sizes[-1])
        return self.bandwidth[size]

    def bound_seconds(self, weight_bytes: int, macs: int, precision: str, working_set: int | None = None,
                      state_bytes: int = 0) -> dict:
        """The row's bound: seconds, which side binds ('memory' or 'compute'), and both terms. `state_bytes`:
        the state a call reads plus the state it writes (all streams), moved besides the weights."""
        moved = int(weight_bytes) + int(state_bytes)
        mem = moved / self.bandwidth_at(working_set or moved)
        peak = self.peak_macs.get("int8" if precision.startswith("int8") else "fp32")
        comp = macs / peak if peak else 0.0
        return {"bound_s": max(mem, comp), "bound_kind": "memory" if mem >= comp else "compute",
                "memory_s": mem, "compute_s": comp, "bytes": moved}

    def to_dict(self) -> dict:
        """JSON-ready (sizes as strings)."""
        d = asdict(self)
        d["bandwidth"] = {str(k): v for k, v in self.bandwidth.items()}
        return d


def _clock(threads: int):
    """The calling thread's CPU clock at 1 thread (the work runs on it), else wall time."""
    return time.thread_time_ns if int(threads) == 1 else time.perf_counter_ns


def copy_bandwidth(nbytes: int, repeats: int = 5, min_seconds: float = 0.02, threads: int = 1) -> float:
    """Bytes per second moved by np.copyto of an `nbytes` float32 buffer (read + write), best of `repeats`."""
    src = np.ones(max(1, nbytes // 4), dtype=np.float32)
    dst = np.empty_like(src)
    inner = max(1, int(min_seconds * 20e9 / max(nbytes, 1) / 10))  # ~2 ms per timing at 20 GB/s
    clock = _clock(threads)
    np.copyto(dst, src)  # first touch of the pages outside the timing
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            np.copyto(dst, src)
        best = min(best, max(clock() - t0, 1) / inner)
    return 2 * src.nbytes / (best * 1e-9)


def _gemm_graph(int8: bool) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    if int8:
        w = numpy_helper.from_array(rng.integers(-64, 64, (k, n)).astype(np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    else:
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([node], "gemm", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def gemm_peak(int8: bool, threads: int, repeats: int = 5) -> float:
    """MACs per second of one ONNX Runtime GEMM of GEMM_SHAPE, best of `repeats` calls."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(_gemm_graph(int8), sess_options=opts, providers=["CPUExecutionProvider"])
    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(1)
    x = rng.integers(0, 128, (m, k)).astype(np.uint8) if int8 else rng.standard_normal((m, k)).astype(np.float32)
    sess.run(None, {"x": x})
    clock = _clock(threads)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        sess.run(None, {"x": x})
        best = min(best, max(clock() - t0, 1))
    return m * k * n / (best * 1e-9)


def measure(threads: int = 1, sizes: tuple[int, ...] = SIZES_BYTES) -> Machine:
    """Measure bandwidth at every size and both GEMM peaks (a second or two)."""
    bandwidth = {int(s): copy_bandwidth(s, threads=threads) for s in sizes}
    peaks = {"fp32": gemm_peak(False, threads), "int8": gemm_peak(True, threads)}
    return Machine(bandwidth=bandwidth, peak_macs=peaks, threads=int(threads))
