"""Signal-to-quantization-noise ratio of an INT8 graph against its fp32 source on the calibration stream.

`layer_sqnr` isolates each quantized layer: its fp32 input activations (recorded on the calibration
tuples) go through the layer alone twice, as in the fp32 graph and as in the INT8 graph (input Q/DQ,
int8 weights), so a layer's figure is its own error, not what earlier layers left. `output_sqnr`
compares whole-graph logits with the state fed from the fp32 stream (per step, no drift);
`stream_sqnr` lets both graphs stream freely (what a device sees: a window-mean readout sums
every frame's error). Layers under
`tolerances.INT8_MIN_SQNR_DB` are kept float by the recipes (selective precision); the tensorrt recipe
then keeps more float while `stream_sqnr` is under `tolerances.INT8_MIN_STREAM_SQNR_DB`.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from kwsdeploy.contract import LOGITS


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - got|^2); inf when identical, -inf when ref is all zeros and got is not."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    noise = float(np.sum((ref - got) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def _session(proto: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _with_outputs(proto: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            out.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
            have.add(n)
    return out


def _constants(g: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in g.initializer}


def _behind_qdq(proto: onnx.ModelProto, name: str) -> str:
    """The tensor behind a DequantizeLinear <- QuantizeLinear chain (the name itself when there is none)."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    for _ in range(2):
        p = producers.get(name)
        if p is None or p.op_type not in ("DequantizeLinear", "QuantizeLinear"):
            break
        name = p.input[0]
    return name


def _float_inputs(proto: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """The activation tensors a layer reads (its data input behind Q/DQ, and e.g. a fused Gemm's
    residual C), constants excluded."""
    consts = _constants(proto.graph)
    out = []
    for k, name in enumerate(node.input):
        if not name:
            continue
        t = _behind_qdq(proto, name)
        if t not in consts and t not in out:
            out.append(t)
    return out


def _subgraph(proto: onnx.ModelProto, node: onnx.NodeProto, x_names: list[str]) -> onnx.ModelProto:
    """`node` and everything between it and the tensors `x_names` or constants, as a model."""
    g = proto.graph
    producers = {o: n for n in g.node for o in n.output}
    consts = _constants(g)
    nodes, inits, seen = [], {}, set()

    def visit(t: str) -> None:
        if not t or t in x_names or t in seen:
            return
        seen.add(t)
        if t in consts:
            inits[t] = consts[t]
            return
        p = producers.get(t)
        if p is None:
            raise ValueError(f"{node.name}: tensor {t!r} depends on a graph input other than {x_names}")
        for i in p.input:
            visit(i)
        if p not in nodes:
            nodes.append(p)

    for i in node.input:
        visit(i)
    nodes.append(node)
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in x_names],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)], list(inits.values()),
    )
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def record_tensor_batches(
    proto: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], names: list[str]
) -> dict[str, list[np.ndarray]]:
    """Values of `names` in `proto`, one array per feed (an inner tensor need not have the batch
    first: a step conv's input is [1, C, B, T])."""
    sess = _session(_with_outputs(proto, names))
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(names, dict(feed))):
            got[n].append(v)
    return got


def record_tensors(proto: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    """Values of batch-first tensors `names` (graph outputs such as the logits) over every feed,
    concatenated on the batch axis."""
    return {n: np.concatenate(v, axis=0) for n, v in record_tensor_batches(proto, feeds, names).items()}


def layer_sqnr(fp32: onnx.ModelProto, q: onnx.ModelProto, calib, layers: list[str], batch: int = 64) -> dict[str, float]:
    """Isolated SQNR (dB) of each named layer of `q` (node names shared with `fp32`)."""
    qnodes = {n.name: n for n in q.graph.node}
    fnodes = {n.name: n for n in fp32.graph.node}
    todo = [(name, qnodes[name]) for name in layers if name in qnodes]
    x_names = {name: _float_inputs(q, node) for name, node in todo}
    acts = record_tensor_batches(fp32, calib.batches(batch), sorted({x for xs in x_names.values() for x in xs}))
    out: dict[str, float] = {}
    for name, node in todo:
        ref_node = fnodes.get(name)
        if ref_node is None:
            continue
        xs = x_names[name]
        ref_layer = _session(_subgraph(fp32, ref_node, xs))  # the fp32 layer alone
        q_layer = _session(_subgraph(q, node, xs))
        refs, gots = [], []
        for i in range(len(acts[xs[0]])):
            feed = {x: acts[x][i] for x in xs}
            refs.append(ref_layer.run(None, feed)[0].ravel())
            gots.append(q_layer.run(None, feed)[0].ravel())
        out[name] = sqnr_db(np.concatenate(refs), np.concatenate(gots))
    return out


def output_sqnr(fp32: onnx.ModelProto, q: onnx.ModelProto, calib, batch: int = 64) -> float:
    """SQNR (dB) of the logits over the calibration tuples (state fed from the fp32 stream)."""
    a = record_tensors(fp32, calib.batches(batch), [LOGITS])[LOGITS]
    b = record_tensors(q, calib.batches(batch), [LOGITS])[LOGITS]
    return sqnr_db(a, b)


def stream_sqnr(fp32: onnx.ModelProto, q: onnx.ModelProto, calib) -> float | None:
    """SQNR (dB) of the logits when both step graphs stream the calibration clips free-running (each its
    own state), the way a device runs them; None when the set cannot be re-streamed (no clips)."""
    from kwsdeploy.calibration.data import joined_streams, stream_inputs
    from kwsdeploy.runtime.ort import OrtStepRunner

    if calib.clips is None or calib.feature_config is None or calib.steps <= 1:
        return None
    joined = joined_streams(calib.clips, calib.streams)
    x = stream_inputs(joined, calib.input_name, calib.feature_config)
    a = OrtStepRunner(fp32.SerializeToString(), batch=len(joined), threads=1).run(x)
    b = OrtStepRunner(q.SerializeToString(), batch=len(joined), threads=1).run(x)
    return sqnr_db(a, b)


def below_floor(sqnr: Mapping[str, float], floor: float) -> dict[str, str]:
    """Layers under the SQNR floor, as float-layer reasons."""
    return {k: f"SQNR {v:.1f} dB < {floor:g} dB floor" for k, v in sqnr.items() if not v >= floor}


def free_running(proto: onnx.ModelProto, x: np.ndarray, names: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Stream `x` ([S, ..., T], the step graph's input) through `proto` free-running from the zero state;
    `logits` and each named tensor per step, stacked on a leading time axis."""
    from kwsdeploy.contract import is_state_name, new_state_name

    names = list(names)
    sess = _session(_with_outputs(proto, names))
    inputs = sess.get_inputs()
    data = next(i for i in inputs if not is_state_name(i.name))
    packet = int(data.shape[-1])
    states = {i.name: np.zeros([x.shape[0], *[int(d) for d in i.shape[1:]]], np.float32)
              for i in inputs if is_state_name(i.name)}
    outs = [LOGITS, *names, *(new_state_name(n) for n in states)]
    got: dict[str, list[np.ndarray]] = {n: [] for n in (LOGITS, *names)}
    for t in range(x.shape[-1] // packet):
        res = sess.run(outs, {data.name: np.ascontiguousarray(x[..., t * packet:(t + 1) * packet]), **states})
        for n, v in zip((LOGITS, *names), res):
            got[n].append(v)
        states = dict(zip(states, res[1 + len(names):]))
    return {n: np.stack(v) for n, v in got.items()}


def stream_layer_sqnr(fp32: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray, layers: Iterable[str],
                      parts: int = 4) -> dict[str, list[float]]:
    """Per layer (node name shared by both graphs) the SQNR (dB) of its output, INT8 vs fp32, both graphs
    free-running on `x`, in each of `parts` equal stretches of the stream (drift shows as a fall), plus
    `logits`."""
    f_nodes = {n.name: n.output[0] for n in fp32.graph.node}
    q_nodes = {n.name: n.output[0] for n in q.graph.node}
    todo = [k for k in layers if k in f_nodes and k in q_nodes]
    a = free_running(fp32, x, [f_nodes[k] for k in todo])
    b = free_running(q, x, [q_nodes[k] for k in todo])
    out = {}
    for k, fa, qb in [*((k, f_nodes[k], q_nodes[k]) for k in todo), (LOGITS, LOGITS, LOGITS)]:
        ref, got = a[fa], b[qb]
        edges = np.linspace(0, len(ref), parts + 1).astype(int)
        out[k] = [round(sqnr_db(ref[i:j], got[i:j]), 2) for i, j in zip(edges[:-1], edges[1:])]
    return out
