"""The `cpu` recipe: whichever INT8 variant ONNX Runtime runs fastest on the CPU it meets, by measurement.

On x86 without VNNI (AVX2), static S8S8 Q/DQ graphs run slower than fp32 (every DequantizeLinear
runs, no integer kernel takes them), while U8S8 integer MatMul kernels are fast; `reduce_range`
(7-bit weights) avoids the int16 saturation of VPMADDUBSW on such CPUs. The candidates below are
timed side by side (1 thread, batch 1 and batch 64) against fp32; the fastest one whose logits stay
above the SQNR floor wins if it beats fp32 by INT8_CPU_MIN_SPEEDUP at every batch size, twice (a second
side-by-side timing confirms); else fp32
itself is shipped as the cpu graph (never slower).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from kwsdeploy.calibration.qdq import (
    PERCENTILE,
    QUANT_OPS,
    QuantResult,
    float_layers,
    name_nodes,
    ort_calibration_method,
    quiet,
    resolve_keep_float,
)

CANDIDATES = ("dynamic-u8s8-rr", "dynamic-u8s8", "static-qoperator-u8s8-rr")
TIMING_BATCHES = (1, 64)


@dataclass(frozen=True)
class Timing:
    """Median seconds per step of one graph at each batch size."""

    name: str
    seconds: Mapping[int, float]


def _dynamic(proto: onnx.ModelProto, reduce_range: bool, exclude: Mapping[str, str] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = {**float_layers(proto, "cpu"), **(exclude or {})}
    with tempfile.TemporaryDirectory(prefix="kwsdeploy-int8-") as tmp, quiet():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=False,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=sorted(keep),
                         extra_options={"MatMulConstBOnly": True})
        return onnx.load(str(dst))


def _static_qoperator(proto: onnx.ModelProto, calib, reduce_range: bool, method: str = "minmax",
                      percentile: float = PERCENTILE, exclude: Mapping[str, str] | None = None,
                      per_channel: bool = True) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    keep = {**float_layers(proto, "cpu"), **(exclude or {})}
    extra = {"MatMulConstBOnly": True, **({"CalibPercentile": float(percentile)} if method == "percentile" else {})}
    with tempfile.TemporaryDirectory(prefix="kwsdeploy-int8-") as tmp, quiet():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        # QLinearConv/QLinearMatMul: standard ops; reduce_range: 7-bit weights (no VPMADDUBSW saturation);
        # per-channel weight scales: +2.5 dB held-out logits SQNR on matchboxnet-causal's validation speaker
        quantize_static(str(src), str(dst), calib.reader(), quant_format=QuantFormat.QOperator,
                        op_types_to_quantize=["Conv", "MatMul"], per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=sorted(keep),
                        calibrate_method=ort_calibration_method(method), extra_options=extra)
        return onnx.load(str(dst))


def build_candidate(name: str, proto: onnx.ModelProto, calib, method: str = "minmax", percentile: float = PERCENTILE,
                    exclude: Mapping[str, str] | None = None, per_channel: bool = True,
                    reduce_range: bool = True) -> onnx.ModelProto:
    """One named cpu candidate graph (`method`, `percentile`: the static candidate's calibration;
    `exclude`: layers kept float; `per_channel`/`reduce_range` False: the static candidate's ablations,
    per-tensor or 8-bit weights, never shipped)."""
    if name == "dynamic-u8s8-rr":
        return _dynamic(proto, True, exclude)
    if name == "dynamic-u8s8":
        return _dynamic(proto, False, exclude)
    if name == "static-qoperator-u8s8-rr":
        return _static_qoperator(proto, calib, reduce_range, method, percentile, exclude, per_channel)
    raise ValueError(f"unknown cpu candidate {name!r}; known: {', '.join(CANDIDATES)}.")


def time_graphs(graphs: Mapping[str, bytes], batches: Sequence[int] = TIMING_BATCHES, round_seconds: float = 0.03,
                rounds: int = 7, threads: int = 1) -> dict[str, Timing]:
    """Seconds per step of each graph at each batch size: the graphs interleaved round by round (side by
    side), the fastest round kept (on a shared machine the minimum is the least disturbed figure). With
    1 thread the clock is the calling thread's CPU time (ONNX Runtime computes on it): time slices given
    to other jobs of an oversubscribed machine do not count, which wall time let decide the choice."""
    from kwsdeploy.runtime.ort import OrtStepRunner as StepSession

    clock = time.thread_time if int(threads) == 1 else time.perf_counter

    out: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in graphs}
    for b in batches:
        sessions = {n: StepSession(g, batch=b, threads=threads) for n, g in graphs.items()}
        packets = {n: np.zeros(s.packet_shape, dtype=s.input_dtype) for n, s in sessions.items()}
        steps = {}
        for n, s in sessions.items():
            s._step_impl(packets[n])
            t0 = time.perf_counter()
            for _ in range(3):
                s._step_impl(packets[n])
            steps[n] = max(3, int(round_seconds / max((time.perf_counter() - t0) / 3, 1e-6)))
        for _ in range(rounds):
            for n, s in sessions.items():
                t0 = clock()
                for _ in range(steps[n]):
                    s._step_impl(packets[n])
                out[n][b].append((clock() - t0) / steps[n])
    return {n: Timing(n, {b: float(np.min(v)) for b, v in d.items()}) for n, d in out.items()}


_INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
                "MatMulIntegerToFloat", "QGemm", "DynamicQuantizeLinear"}


def quantized_layers(proto: onnx.ModelProto, q: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm names of `proto` that no longer appear as float nodes in `q`."""
    still = {n.name for n in q.graph.node if n.op_type in QUANT_OPS}
    return [n.name for n in proto.graph.node if n.op_type in QUANT_OPS and n.name not in still]


def cpu_recipe(
    proto: onnx.ModelProto,
    calib,
    floor_db: float | None = None,
    candidates: Sequence[str] = CANDIDATES,
    timer: Callable[[Mapping[str, bytes]], dict[str, Timing]] | None = None,
    method: str = "minmax",
    percentile: float = PERCENTILE,
    keep_float=(),
) -> QuantResult:
    """Build every candidate, drop those whose logits SQNR is under `floor_db`, time the rest against
    fp32 and keep the fastest (worst ratio over the batch sizes); fp32 when nothing is faster.
    `method`/`percentile`: the static candidate's calibration; `keep_float`: as `qdq.resolve_keep_float`."""
    from kwsdeploy import tolerances
    from kwsdeploy.calibration.sqnr import output_sqnr, stream_sqnr

    floor_db = tolerances.INT8_CPU_MIN_LOGITS_SQNR_DB if floor_db is None else floor_db
    proto = name_nodes(proto)
    forced = resolve_keep_float(proto, keep_float, "cpu")
    graphs: dict[str, onnx.ModelProto] = {}
    sqnr: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in candidates:
        try:
            g = build_candidate(name, proto, calib, method, percentile, forced)
            if not {n.op_type for n in g.graph.node} & _INTEGER_OPS:
                errors[name] = "no layer this candidate quantizes"
                continue
            domains = {n.domain for n in g.graph.node} - {"", "ai.onnx"}
            if domains:  # bundles hold standard ops only (exporters.onnx.check_graph)
                errors[name] = f"uses non-standard op domain(s) {sorted(domains)}"
                continue
            free = stream_sqnr(proto, g, calib)  # free-running when the set can be re-streamed
            sqnr[name] = free if free is not None else output_sqnr(proto, g, calib)
        except Exception as exc:  # a candidate onnxruntime cannot build or run is skipped, and said so
            errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        if sqnr[name] >= floor_db:
            graphs[name] = g
    timings = (timer or time_graphs)({"fp32": proto.SerializeToString(),
                                      **{n: g.SerializeToString() for n, g in graphs.items()}})
    base = timings["fp32"].seconds

    def worst(n: str) -> float:  # slowest ratio over the batch sizes (< 1 means faster than fp32 at every size)
        return max(timings[n].seconds[b] / base[b] for b in base)

    best = min(timings, key=lambda n: (worst(n), n != "fp32"))
    if worst(best) > 1.0 / tolerances.INT8_CPU_MIN_SPEEDUP:
        best = "fp32"
    confirm = None
    if best != "fp32":  # a second, independent side-by-side timing must agree (shared machines are noisy)
        again = (timer or time_graphs)({"fp32": proto.SerializeToString(), best: graphs[best].SerializeToString()})
        confirm = {str(b): round(again["fp32"].seconds[b] / again[best].seconds[b], 3) for b in base}
        if max(again[best].seconds[b] / again["fp32"].seconds[b] for b in base) > 1.0 / tolerances.INT8_CPU_MIN_SPEEDUP:
            best = "fp32"
    chosen = proto if best == "fp32" else graphs[best]
    quantized = quantized_layers(proto, chosen)
    keep = {n.name: (float_layers(proto, "cpu").get(n.name) or forced.get(n.name) or f"{best}: not quantized by this variant")
            for n in proto.graph.node if n.op_type in QUANT_OPS and n.name not in quantized}
    settings = {
        "tool": "onnxruntime.quantization", "chosen": best,
        "speed_vs_fp32": {n: {str(b): round(base[b] / t.seconds[b], 3) for b in base} for n, t in timings.items()},
        "seconds_per_step": {n: {str(b): t.seconds[b] for b in t.seconds} for n, t in timings.items()},
        "confirmation_speed_vs_fp32": confirm,
        "logits_sqnr_db": {n: round(v, 2) for n, v in sqnr.items()}, "sqnr_floor_db": floor_db,
        "rejected": {**{n: f"logits SQNR {v:.1f} dB < {floor_db:g} dB" for n, v in sqnr.items() if not v >= floor_db},
                     **errors},
        "threads": 1, "batches": list(base), "static_method": method, "static_weights": "per-channel, 7-bit",
        "keep_float": sorted(forced),
        **({"percentile": float(percentile)} if method == "percentile" else {}),
    }
    return QuantResult(chosen, "cpu", quantized, dict(sorted(keep.items())), settings)
