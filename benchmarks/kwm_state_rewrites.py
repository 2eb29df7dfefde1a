"""Rewrites of the causal KWM step graph's selective-scan state update (h' = exp(dt A) * h + B^T u,
y = C h'), each computing the export's numbers in another layout: the variants that
`bench_kwm_state_update.py` times side by side. `variant_graph(name, exported)` builds one by name:
`export`, `outer-matmul` / `outer-mul`, `tiled-SxC`, `dsplit-C`, `dsplitcat-C` (that script's docstring
says what each is)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def state_updates(graph) -> list[dict]:
    """Per layer the nodes of h' = Exp(Mul(dt, A)) * h + outer(Bt, u) and y = MatMul(C, h')."""
    prod = _producers(graph)
    consumers: dict = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name for i in graph.initializer}
    found = []
    for out in graph.output:
        if not (out.name.startswith("new_state.") and out.name.endswith(".ssm")):
            continue
        add = prod[out.name]
        a, b = (prod.get(i) for i in add.input)
        decay_mul, outer = (a, b) if a is not None and any(i.startswith("state.") for i in a.input) else (b, a)
        state = next(i for i in decay_mul.input if i.startswith("state."))
        exp = prod[next(i for i in decay_mul.input if i != state)]
        dt_mul = prod[exp.input[0]]
        readout = next(c for c in consumers[out.name] if c.op_type == "MatMul")
        if (add.op_type, decay_mul.op_type, exp.op_type, dt_mul.op_type) != ("Add", "Mul", "Exp", "Mul") or \
                outer.op_type not in ("MatMul", "Mul"):
            raise ValueError(f"unexpected state update pattern at {out.name}")
        found.append(dict(add=add, decay_mul=decay_mul, exp=exp, dt_mul=dt_mul, outer=outer, readout=readout,
                          state=state, dt=next(i for i in dt_mul.input if i not in inits),
                          A=next(i for i in dt_mul.input if i in inits)))
    return found


def with_outer(proto: onnx.ModelProto, op: str) -> onnx.ModelProto:
    """B^T u as `op` (MatMul or Mul): the same products, so the same numbers."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for layer in state_updates(out.graph):
        layer["outer"].op_type = op
    return out


def _replace_update(nodes: list, layer: dict, new: list) -> list:
    """`nodes` with one layer's six state-update nodes replaced by `new`, placed where its readout was."""
    old = {id(layer[n]) for n in ("add", "decay_mul", "exp", "dt_mul", "outer", "readout")}
    at = nodes.index(layer["readout"])
    return [n for n in nodes[:at] + new + nodes[at:] if id(n) not in old]


def _with_nodes(out: onnx.ModelProto, nodes: list) -> onnx.ModelProto:
    """`out` with its node list replaced by `nodes` (unnamed nodes named after their first output), checked."""
    for n in nodes:
        n.name = n.name or n.output[0]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def tiled(proto: onnx.ModelProto, size: int, chunks: int) -> onnx.ModelProto:
    """The state update in `chunks` batch chunks of `size` streams (the last takes the rest; a smaller
    batch leaves the later chunks empty)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph

    def const(name, value):
        g.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
        return name

    axes = const("tile.axes", [0])
    bounds = [(const(f"tile.start{i}", [i * size]), const(f"tile.end{i}", [(i + 1) * size if i < chunks - 1 else 2 ** 62]))
              for i in range(chunks)]
    nodes = list(g.node)
    for k, layer in enumerate(state_updates(g)):
        bt, u = layer["outer"].input[:2]
        cm = layer["readout"].input[0]
        new, states, ys = [], [], []
        for i, (start, end) in enumerate(bounds):
            p = f"tile{k}.{i}."

            def piece(x, tag, p=p, start=start, end=end):
                new.append(helper.make_node("Slice", [x, start, end, axes], [p + tag]))
                return p + tag

            dt, h, bti, ui, ci = (piece(x, t) for x, t in ((layer["dt"], "dt"), (layer["state"], "state"), (bt, "bt"), (u, "u"), (cm, "c")))
            new += [helper.make_node("Mul", [dt, layer["A"]], [p + "dtA"]),
                    helper.make_node("Exp", [p + "dtA"], [p + "decay"]),
                    helper.make_node("Mul", [p + "decay", h], [p + "decayed"]),
                    helper.make_node(layer["outer"].op_type, [bti, ui], [p + "input"]),
                    helper.make_node("Add", [p + "decayed", p + "input"], [p + "new_state"]),
                    helper.make_node("MatMul", [ci, p + "new_state"], [p + "y"])]
            states.append(p + "new_state")
            ys.append(p + "y")
        new += [helper.make_node("Concat", states, [layer["add"].output[0]], axis=0),
                helper.make_node("Concat", ys, [layer["readout"].output[0]], axis=0)]
        nodes = _replace_update(nodes, layer, new)
    return _with_nodes(out, nodes)


PART = ".part"  # a state split along its last axis is bound as state.<layer>.ssm.part0, .part1, ...


def d_split(proto: onnx.ModelProto, parts: int, state_inputs: bool) -> onnx.ModelProto:
    """The state update split along the channel axis (2D) into `parts` pieces, each piece's six ops one
    after another, so its [B, 16, 2D/parts] tensors can stay in L2. Every op of the update is
    elementwise over the channels (the readout sums over the 16 state rows only), so the pieces are
    independent; dt, u and A are split (dt and u are [B, 1, 2D], A a constant), Bt and C are shared,
    the readouts are joined on the last axis. `state_inputs`: each piece of the SSM state is its own
    graph input and output (state.<layer>.ssm.partI: no copy of the state); else the one state is
    Split and its new pieces Concatenated (the contract's names, at the price of two copies)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    nodes = list(g.node)
    inputs = {i.name: i for i in g.input}
    outputs = {o.name: o for o in g.output}
    for k, layer in enumerate(state_updates(g)):
        p = f"dsplit{k}."
        a = numpy_helper.to_array(inits[layer["A"]])
        width = a.shape[-1]
        if width % parts:
            raise ValueError(f"{width} channels do not split into {parts} parts")
        w = width // parts
        sizes = p + "sizes"
        g.initializer.append(numpy_helper.from_array(np.full(parts, w, np.int64), sizes))
        for i in range(parts):
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(a[..., i * w:(i + 1) * w]), f"{p}A{i}"))
        bt, u = layer["outer"].input[:2]
        cm = layer["readout"].input[0]
        state, new_state = layer["state"], layer["add"].output[0]
        new = [helper.make_node("Split", [layer["dt"], sizes], [f"{p}dt{i}" for i in range(parts)], axis=-1),
               helper.make_node("Split", [u, sizes], [f"{p}u{i}" for i in range(parts)], axis=-1)]
        if state_inputs:
            hs = [state + f"{PART}{i}" for i in range(parts)]
            news = ["new_" + h for h in hs]
            src = inputs[state]
            dims = [d.dim_param or d.dim_value for d in src.type.tensor_type.shape.dim]
            at = list(g.input).index(src)
            g.input.remove(src)
            for i, h in enumerate(hs):
                g.input.insert(at + i, helper.make_tensor_value_info(h, onnx.TensorProto.FLOAT, [*dims[:-1], w]))
            dst = outputs[new_state]
            at = list(g.output).index(dst)
            g.output.remove(dst)
            for i, h in enumerate(news):
                g.output.insert(at + i, helper.make_tensor_value_info(h, onnx.TensorProto.FLOAT, [*dims[:-1], w]))
        else:
            hs = [f"{p}h{i}" for i in range(parts)]
            news = [f"{p}new{i}" for i in range(parts)]
            new.append(helper.make_node("Split", [state, sizes], hs, axis=-1))
        ys = []
        for i in range(parts):
            q = f"{p}{i}."
            new += [helper.make_node("Mul", [f"{p}dt{i}", f"{p}A{i}"], [q + "dtA"]),
                    helper.make_node("Exp", [q + "dtA"], [q + "decay"]),
                    helper.make_node("Mul", [q + "decay", hs[i]], [q + "decayed"]),
                    helper.make_node(layer["outer"].op_type, [bt, f"{p}u{i}"], [q + "input"]),
                    helper.make_node("Add", [q + "decayed", q + "input"], [news[i]]),
                    helper.make_node("MatMul", [cm, news[i]], [q + "y"])]
            ys.append(q + "y")
        if not state_inputs:
            new.append(helper.make_node("Concat", news, [new_state], axis=-1))
        new.append(helper.make_node("Concat", ys, [layer["readout"].output[0]], axis=-1))
        nodes = _replace_update(nodes, layer, new)
    return _with_nodes(out, nodes)


def variant_graph(name: str, exported: onnx.ModelProto) -> onnx.ModelProto:
    if name == "export":
        return exported
    if name == "outer-matmul":
        return with_outer(exported, "MatMul")
    if name == "outer-mul":
        return with_outer(exported, "Mul")
    if name.startswith("tiled-"):
        size, chunks = (int(v) for v in name[len("tiled-"):].split("x"))
        return tiled(exported, size, chunks)
    if name.startswith("dsplit-") or name.startswith("dsplitcat-"):
        kind, parts = name.split("-")
        return d_split(exported, int(parts), state_inputs=kind == "dsplit")
    raise ValueError(f"unknown variant {name!r}")
