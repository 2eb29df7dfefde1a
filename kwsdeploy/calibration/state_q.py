"""`--quantize-state`: Keyword Mamba's SSM state as int8 (the tensorrt recipe; default off).

Each `state.<layer>.ssm` input gets QuantizeLinear -> DequantizeLinear right after the graph input,
and its update `new_state.<layer>.ssm` the same pair right before the graph output: what the step
reads and what it hands on are int8-representable (signed, zero point 0, one per-tensor scale from
the state's calibrated range: the largest |value| met streaming the calibration clips). The graph's
inputs and outputs stay float (TensorRT's state bindings); a device that stores the state as int8
loses nothing more.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kwsdeploy.contract import STATE_PREFIX, new_state_name

SSM_KIND = "ssm"


class StateQuantizeError(ValueError):
    """--quantize-state on a graph without SSM state; the message says what to do."""


def ssm_states(proto: onnx.ModelProto) -> list[str]:
    """The graph's SSM state inputs (`state.<layer>.ssm`), graph order."""
    return [i.name for i in proto.graph.input if i.name.startswith(STATE_PREFIX) and i.name.rsplit(".", 1)[-1] == SSM_KIND]


def require_ssm_states(proto: onnx.ModelProto, model_name: str = "this model") -> list[str]:
    """The SSM states, or a one-line refusal naming what has them."""
    names = ssm_states(proto)
    if not names:
        raise StateQuantizeError(f"--quantize-state: {model_name} has no SSM state (state.<layer>.ssm); it applies "
                                 "to Keyword Mamba step graphs: drop --quantize-state.")
    return names


def _qdq_pair(x: str, y: str, scale_name: str, zp_name: str, tag: str) -> list[onnx.NodeProto]:
    q = f"{tag}_state_q"
    return [helper.make_node("QuantizeLinear", [x, scale_name, zp_name], [q], name=f"{tag}_StateQuantize"),
            helper.make_node("DequantizeLinear", [q, scale_name, zp_name], [y], name=f"{tag}_StateDequantize")]


def quantize_state(proto: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> tuple[onnx.ModelProto, dict]:
    """A copy of `proto` with every SSM state Q/DQ'd at the boundary; returns (graph, {state: scale})."""
    names = require_ssm_states(proto)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    scales: dict[str, float] = {}
    head, tail = [], []
    for name in names:
        lo, hi = ranges[name]
        amax = max(abs(lo), abs(hi))
        if not amax > 0:
            raise StateQuantizeError(f"--quantize-state: {name} stayed zero over the calibration stream; "
                                     "calibrate on more or longer clips (--calib-clips).")
        scale = np.float32(amax / 127.0)
        scales[name] = float(scale)
        tag = name[len(STATE_PREFIX):].replace(".", "_")
        s_name, z_name = f"{tag}_state_scale", f"{tag}_state_zero"
        g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), s_name),
                              numpy_helper.from_array(np.array(0, np.int8), z_name)])
        read = f"{name}_int8_read"
        for node in g.node:  # the step reads the int8-representable state
            for k, x in enumerate(node.input):
                if x == name:
                    node.input[k] = read
        head += _qdq_pair(name, read, s_name, z_name, f"{tag}_in")
        new = new_state_name(name)
        written = f"{new}_float"
        for node in g.node:  # the update is rounded to int8 before it leaves the step
            for k, x in enumerate(node.output):
                if x == new:
                    node.output[k] = written
            for k, x in enumerate(node.input):
                if x == new:
                    node.input[k] = written
        tail += _qdq_pair(written, new, s_name, z_name, f"{tag}_out")
    body = list(g.node)
    del g.node[:]
    g.node.extend(head + body + tail)
    return out, scales
