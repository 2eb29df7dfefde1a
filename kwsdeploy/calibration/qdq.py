"""Static INT8 Q/DQ quantization of a step (or offline) graph with onnxruntime.quantization.

The `tensorrt` recipe is explicit quantization as TensorRT wants it: signed INT8, symmetric (zero
point 0 on every Q and DQ), per-channel weight scales on the output-channel axis, per-tensor
activations, weights stored as int8 initializers feeding a DequantizeLinear, biases float. Only
Conv/MatMul/Gemm with a constant weight are quantized; what stays float and why is returned:
the MFCC frontend, activation x activation MatMuls (the Keyword Mamba recurrence: dt x B outer
product and the C readout), depthwise convolutions (TensorRT on Jetson Orin runs them slower or not
at all in INT8) and any layer the caller names (selective precision by SQNR). Float layers with a
constant weight still store it int8 (weight-only, `calibration.weights`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import onnx

QUANT_OPS = ("Conv", "MatMul", "Gemm")
METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.999
FRONTEND_PREFIX = "frontend/"
REASON_FRONTEND = "MFCC frontend (float by design)"
REASON_RECURRENCE = "activation x activation MatMul (recurrence arithmetic, float by design)"
REASON_DEPTHWISE = "depthwise conv (TensorRT on Jetson Orin: slower or unsupported in INT8)"
REASON_REQUESTED = "kept float on request (--keep-float)"
KEEP_FLOAT_ALIASES = ("first", "last")  # the first / last quantizable layer in graph order (input layer, classifier)


class QuantizeError(ValueError):
    """A graph the recipe cannot quantize; the message says what to do."""


@dataclass
class QuantResult:
    """A quantized graph, which layers were quantized, which stayed float (name -> reason), settings."""

    proto: onnx.ModelProto
    recipe: str
    quantized: list[str]
    float_layers: dict[str, str]
    settings: dict = field(default_factory=dict)


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization prints progress to stdout and warnings to the root logger; keep the
    CLI's output clean."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def name_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a unique, non-empty name (nodes_to_exclude needs names) and one
    opset entry per domain (a graph merged with its frontend lists the default domain twice)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    versions: dict[str, int] = {}
    for op in out.opset_import:
        key = "" if op.domain == "ai.onnx" else op.domain
        versions[key] = max(versions.get(key, 0), op.version)
    del out.opset_import[:]
    out.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    seen: set[str] = set()
    for i, node in enumerate(out.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return out


def constants(proto: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node tensors by name."""
    out = {i.name: i for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return out


def _is_depthwise(node: onnx.NodeProto, consts: Mapping[str, onnx.TensorProto]) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = consts.get(node.input[1]) if len(node.input) > 1 else None
    return group > 1 and w is not None and len(w.dims) >= 2 and w.dims[1] == 1 and w.dims[0] >= group


def float_layers(proto: onnx.ModelProto, recipe: str = "tensorrt") -> dict[str, str]:
    """Conv/MatMul/Gemm nodes the recipe keeps float, with the reason (node name -> reason)."""
    consts = constants(proto)
    out: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        if node.name.startswith(FRONTEND_PREFIX):
            out[node.name] = REASON_FRONTEND
        elif len(node.input) < 2 or node.input[1] not in consts:
            out[node.name] = REASON_RECURRENCE
        elif recipe == "tensorrt" and node.op_type == "Conv" and _is_depthwise(node, consts):
            out[node.name] = REASON_DEPTHWISE
    return out


def quantizable_layers(proto: onnx.ModelProto, recipe: str = "tensorrt") -> list[str]:
    """Conv/MatMul/Gemm node names the recipe quantizes (graph order)."""
    keep = float_layers(proto, recipe)
    return [n.name for n in proto.graph.node if n.op_type in QUANT_OPS and n.name not in keep]


def keep_float_alias(name: str) -> tuple[str, int] | None:
    """`first` / `last` / `first:N` / `last:N` as (end, N), `#N` (the N-th quantizable layer, from 1) as
    ('#', N); None for anything else (a node name)."""
    if name.startswith("#"):
        if not name[1:].isdigit() or int(name[1:]) < 1:
            raise QuantizeError(f"--keep-float {name!r}: give #N with N >= 1 (the N-th quantizable layer, e.g. #2).")
        return "#", int(name[1:])
    end, colon, count = name.partition(":")
    if end not in KEEP_FLOAT_ALIASES:
        return None
    if not colon:
        return end, 1
    if not count.isdigit() or int(count) < 1:
        raise QuantizeError(f"--keep-float {name!r}: give {end}:N with N >= 1 (e.g. {end}:2).")
    return end, int(count)


def resolve_keep_float(proto: onnx.ModelProto, names, recipe: str = "tensorrt") -> dict[str, str]:
    """`--keep-float` entries (node names, or `first` / `last`: the first / last layer the recipe would
    quantize, in graph order; `first:N` / `last:N`: the first / last N of them; `#N`: the N-th, from 1)
    as float-layer reasons; an unknown name is a one-line error."""
    todo = quantizable_layers(name_nodes(proto), recipe)
    out: dict[str, str] = {}
    for name in names:
        alias = keep_float_alias(name)
        if alias is not None:
            end, count = alias
            if end == "#":
                if count <= len(todo):
                    out.setdefault(todo[count - 1], f"{REASON_REQUESTED}: quantizable layer {name}")
                    continue
                raise QuantizeError(f"--keep-float {name!r}: this recipe quantizes {len(todo)} layers; give #1 to "
                                    f"#{len(todo)}.")
            picked = todo[:count] if end == "first" else todo[::-1][:count]
            for layer in picked:
                out.setdefault(layer, f"{REASON_REQUESTED}: {end} quantizable layer" if count == 1
                               else f"{REASON_REQUESTED}: one of the {end} {count} quantizable layers")
        elif name in todo:
            out[name] = REASON_REQUESTED
        else:
            shown = ", ".join(todo[:6]) + (", ..." if len(todo) > 6 else "")
            raise QuantizeError(f"--keep-float {name!r} is not a layer this recipe quantizes; give first, last, "
                                f"first:N, last:N, #N or a node name ({shown}).")
    return out


def ort_calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
    if method not in table:
        raise QuantizeError(f"--calib-method must be one of {', '.join(METHODS)}, got {method!r}.")
    return table[method]


def quantize_tensorrt(
    proto: onnx.ModelProto,
    calib,
    method: str = "minmax",
    exclude: Mapping[str, str] | None = None,
    batch: int = 64,
    weight_only: bool = True,
    percentile: float = PERCENTILE,
) -> QuantResult:
    """The `tensorrt` recipe on `proto` calibrated on `calib` (a CalibrationSet); `exclude` adds
    layers kept float (name -> reason). `weight_only`: the float layers with a constant weight (not the
    frontend, not the recurrence) and decay constants still store int8 (`calibration.weights`).
    `percentile`: the range kept by the percentile method."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    proto = name_nodes(proto)
    keep = float_layers(proto, "tensorrt")
    keep.update(exclude or {})
    todo = [n.name for n in proto.graph.node if n.op_type in QUANT_OPS and n.name not in keep]
    if not todo:
        raise QuantizeError("this graph has no Conv/MatMul/Gemm layer with constant weights outside the float set; "
                            "INT8 would change nothing: export it without --int8.")
    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False, "MatMulConstBOnly": True,
        "DedicatedQDQPair": False, "AddQDQPairToWeight": False,
        "OpTypesToExcludeOutputQuantization": list(QUANT_OPS),  # logits and layer outputs stay float
    }
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    calib.check_state_ranges()
    with tempfile.TemporaryDirectory(prefix="kwsdeploy-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        quantize_static(
            str(src), str(dst), calib.reader(batch), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=todo, nodes_to_exclude=sorted(keep), calibrate_method=ort_calibration_method(method),
            extra_options=extra,
        )
        out = onnx.load(str(dst))
    stored: list[str] = []
    if weight_only:
        from kwsdeploy.calibration.weights import REASON_SUFFIX, store_weights_int8

        design = (REASON_FRONTEND, REASON_RECURRENCE)
        out, stored = store_weights_int8(out, [k for k, v in keep.items() if v not in design])
        keep = {k: v + REASON_SUFFIX if k in stored else v for k, v in keep.items()}
    from kwsdeploy.calibration.share import share_constants

    out, shared = share_constants(out)  # the zero points, repeated per layer, stored once
    settings = {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": "int8 symmetric per-tensor",
        "weights": "int8 symmetric per-channel (output-channel axis)", "bias": "float", "method": method,
        "weight_only_int8": stored, "shared_constants": shared,
        **({"percentile": float(percentile)} if method == "percentile" else {}),
    }
    return QuantResult(out, "tensorrt", todo, dict(sorted(keep.items())), settings)


def model_params(proto: onnx.ModelProto) -> int:
    """Float weights of a graph outside the MFCC frontend (elements of its float initializers)."""
    import math

    return sum(math.prod(i.dims) for i in proto.graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT and not i.name.startswith(FRONTEND_PREFIX))


def alone_stream_sqnr(proto: onnx.ModelProto, calib, method: str, layers: list[str],
                      keep: Mapping[str, str], weight_only: bool = True, percentile: float = PERCENTILE) -> dict[str, float]:
    """Free-running stream logits SQNR (dB) with only one of `layers` quantized, per layer (its own
    effect on what a device reads; `keep` stays float as well)."""
    from kwsdeploy.calibration.sqnr import stream_sqnr

    out = {}
    for name in layers:
        others = {k: "" for k in layers if k != name}
        q = quantize_tensorrt(proto, calib, method, exclude={**keep, **others}, weight_only=weight_only,
                              percentile=percentile)
        out[name] = stream_sqnr(proto, q.proto, calib)
    return out


def tensorrt_recipe(proto: onnx.ModelProto, calib, method: str = "minmax", floor_db: float | None = None,
                    stream_floor_db: float | None = None, max_rounds: int | None = None,
                    quantize_state: bool = False, stream_trigger_db: float | None = None,
                    percentile: float = PERCENTILE, keep_float=()) -> QuantResult:
    """`quantize_tensorrt`, then selective precision: layers whose isolated SQNR is under `floor_db`
    (default tolerances.INT8_MIN_SQNR_DB) are kept float and the graph is quantized again; then, if the
    free-running stream logits SQNR is under `stream_trigger_db` (tolerances.INT8_STREAM_GATE_BELOW_DB),
    while it is under `stream_floor_db` (tolerances.INT8_MIN_STREAM_SQNR_DB) the quantized layer that
    alone costs the stream most is kept float too (at most `max_rounds` rounds,
    tolerances.INT8_STREAM_MAX_ROUNDS, never the last quantized layer, and no more once a round gained
    under tolerances.INT8_STREAM_MIN_GAIN_DB: what is left is not any one layer's). Float layers store int8
    weights (weight-only) in graphs of more than tolerances.INT8_WEIGHT_ONLY_MIN_PARAMS weights.
    `quantize_state`: then the
    SSM state is Q/DQ'd at the graph boundary (`calibration.state_q`) and the SQNRs re-measured.
    `keep_float`: layers kept float from the start (`resolve_keep_float`: names, `first`, `last`)."""
    from kwsdeploy import tolerances
    from kwsdeploy.calibration.sqnr import below_floor, layer_sqnr, output_sqnr, stream_sqnr

    floor = tolerances.INT8_MIN_SQNR_DB if floor_db is None else floor_db
    sfloor = tolerances.INT8_MIN_STREAM_SQNR_DB if stream_floor_db is None else stream_floor_db
    rounds = tolerances.INT8_STREAM_MAX_ROUNDS if max_rounds is None else max_rounds
    trigger = tolerances.INT8_STREAM_GATE_BELOW_DB if stream_trigger_db is None else stream_trigger_db
    min_gain = tolerances.INT8_STREAM_MIN_GAIN_DB
    proto = name_nodes(proto)
    forced = resolve_keep_float(proto, keep_float)
    wo = model_params(proto) > tolerances.INT8_WEIGHT_ONLY_MIN_PARAMS
    pct = {"percentile": percentile}
    with quiet():
        first = quantize_tensorrt(proto, calib, method, exclude=forced, weight_only=wo, **pct)
        sqnr = layer_sqnr(proto, first.proto, calib, first.quantized)
        under = below_floor(sqnr, floor)
        low = {**forced, **under}
        result = first
        if under and len(under) < len(first.quantized):
            result = quantize_tensorrt(proto, calib, method, exclude=low, weight_only=wo, **pct)
        elif under:
            raise QuantizeError(f"every quantizable layer is under the {floor:g} dB SQNR floor "
                                f"({', '.join(f'{k}: {v:.1f} dB' for k, v in sqnr.items())}); INT8 would change nothing "
                                "worth having: calibrate on more representative data or export without --int8.")
        free = stream_sqnr(proto, result.proto, calib)
        history = [] if free is None else [round(free, 2)]
        alone: dict[str, float] = {}
        gate = free is not None and free < min(trigger, sfloor)
        if gate:
            alone = alone_stream_sqnr(proto, calib, method, result.quantized, low, wo, percentile)
        gain = float("inf")
        while gate and free < sfloor and len(history) <= rounds and len(result.quantized) > 1 and gain >= min_gain:
            worst = min(result.quantized, key=lambda k: alone.get(k, float("inf")))
            low[worst] = (f"stream logits SQNR {free:.1f} dB < {sfloor:g} dB stream floor; worst layer left "
                          f"(quantized alone: stream {alone.get(worst, float('nan')):.1f} dB, "
                          f"isolated {sqnr.get(worst, float('nan')):.1f} dB)")
            result = quantize_tensorrt(proto, calib, method, exclude=low, weight_only=wo, **pct)
            free = stream_sqnr(proto, result.proto, calib)
            gain = free - history[-1]
            history.append(round(free, 2))
        if quantize_state:
            from kwsdeploy.calibration.state_q import quantize_state as q_state

            result.proto, scales = q_state(result.proto, calib.ranges())
            result.settings.update(state_int8_scales={k: float(f"{v:.6g}") for k, v in scales.items()},
                                   stream_logits_sqnr_db_float_state=None if free is None else round(free, 2))
            free = stream_sqnr(proto, result.proto, calib)
        result.settings.update(
            layer_sqnr_db={k: round(v, 2) for k, v in sqnr.items()}, sqnr_floor_db=floor, keep_float=sorted(forced),
            logits_sqnr_db=round(output_sqnr(proto, result.proto, calib), 2),
        )
        if free is not None:
            result.settings.update(stream_logits_sqnr_db=round(free, 2), stream_sqnr_floor_db=sfloor,
                                   stream_gate_below_db=trigger, stream_sqnr_rounds_db=history)
        if alone:
            result.settings["alone_stream_sqnr_db"] = {k: round(v, 2) for k, v in alone.items()}
    return result
