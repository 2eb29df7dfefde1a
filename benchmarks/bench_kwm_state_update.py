"""The causal KWM step's selective-scan state update in ONNX Runtime: graph and session variants side by side.

Exports a registry model's fp32 1-frame step graph (as `kwsdeploy benchmark` builds it), derives
variants of its per-layer state update (h' = exp(dt A) * h + B^T u, y = C h') by rewriting the graph,
and times every variant x session option at each batch with ONNX Runtime on 1 thread:

- `export`: the graph as exported (the outer product B^T u as the exporter wrote it);
- `outer-matmul` / `outer-mul`: B^T u as a K=1 MatMul ([B,16,1] x [B,1,2D]) or as a broadcast Mul;
- `tiled-SxC`: the state update split along the batch into C chunks of S streams (the last takes
  the rest), each chunk's six ops one after another, so its [S,16,2D] tensors could stay in L2;
  the chunks' new states and readouts are concatenated back;
- `GRAPH@OPTION=VALUE`: a session option on a graph (level=basic|ext|all, order=priority,
  mempattern=0, arena=0, or any session config entry); `inplace=1` binds one state set as both
  the inputs and the outputs (a data point only: ONNX Runtime does not document aliased bindings);
  `VARIANT#TAG` repeats a variant as a control.

Method: IO binding with ping-pong state (as `OrtStepRunner`), CPU time of the calling thread per
call (ONNX Runtime computes on it with 1 thread; a loaded machine inflates wall time far more),
`--sessions` sessions per variant created in shuffled order (the first-created sessions ran up to
27 % slower), rounds in shuffled order; each row reports the median per-call CPU time and the
median over rounds of its ratio to the first variant (sessions averaged). First, every variant's
logits and new states are checked against the first variant's over 20 steps from a random state
at `--parity-batches` (1,5,64,70: tiled chunks must cover batches they do not divide). `--profile`
adds ONNX Runtime's kernel time by op type and the state update's share.

    python benchmarks/bench_kwm_state_update.py [--model kwm-causal-192-12] [--variants export,outer-mul,...]
        [--batches 1,64] [--rounds 15] [--seconds 0.15] [--sessions 3] [--profile] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper


def export(model: str) -> onnx.ModelProto:
    from kwsdeploy.bench.subjects import SubjectKey, prepare

    return prepare(SubjectKey(model, "step", 1, False)).onnx_graph()


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


def session(graph: bytes, options: dict, profile_prefix: str = ""):
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    if profile_prefix:
        o.enable_profiling, o.profile_file_prefix = True, profile_prefix
    for k, v in options.items():
        if k == "level":
            o.graph_optimization_level = levels[v]
        elif k == "order":
            o.execution_order = {"default": ort.ExecutionOrder.DEFAULT, "priority": ort.ExecutionOrder.PRIORITY_BASED}[v]
        elif k == "mempattern":
            o.enable_mem_pattern = v == "1"
        elif k == "arena":
            o.enable_cpu_mem_arena = v == "1"
        else:
            o.add_session_config_entry(k, v)
    return ort.InferenceSession(graph, o, providers=["CPUExecutionProvider"])


class Stepper:
    """One session, IO binding, two state sets swapped after every call (OrtStepRunner's scheme)."""

    def __init__(self, graph: bytes, options: dict, batch: int, seed: int = 0, profile_prefix: str = "") -> None:
        import onnxruntime as ort

        options = dict(options)
        options.pop("session.profile", None)
        inplace = options.pop("inplace", "0") == "1"  # one state set, bound as input and output
        self.s = s = session(graph, options, profile_prefix)
        rng = np.random.default_rng(seed)
        names = [i.name for i in s.get_inputs()]
        shapes = {i.name: [batch, *i.shape[1:]] for i in s.get_inputs()}
        canon: dict = {}  # a split state's parts are drawn as the one state they stand for (same numbers)
        for n in names:
            base = n.split(PART)[0]
            canon.setdefault(base, []).append(n)

        def draw():
            out = {}
            for base, parts in canon.items():
                shape = shapes[parts[0]][:-1] + [sum(shapes[q][-1] for q in parts)]
                full = (rng.standard_normal(shape) * (1.0 if base == "features" else 0.1)).astype(np.float32)
                out.update(zip(parts, np.split(full, len(parts), axis=-1)) if len(parts) > 1 else {base: full})
            return {n: np.ascontiguousarray(out[n]) for n in names}

        self.canon = canon
        self.sets = [draw() for _ in range(2)]
        self.sets[1]["features"] = self.sets[0]["features"]
        if inplace:
            self.sets[1] = self.sets[0]
        vals = [{n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in st.items()} for st in self.sets]
        classes = s.get_outputs()[0].shape[1]
        self.logits = np.zeros([batch, classes], np.float32)
        lv = ort.OrtValue.ortvalue_from_numpy(self.logits)
        self.bindings = []
        for src, dst in ((0, 1), (1, 0)):
            b = s.io_binding()
            for n in names:
                b.bind_ortvalue_input(n, vals[src][n])
                if n != "features":
                    b.bind_ortvalue_output("new_" + n, vals[dst][n])
            b.bind_ortvalue_output("logits", lv)
            self.bindings.append(b)
        self.cur = 0

    def step(self) -> None:
        self.s.run_with_iobinding(self.bindings[self.cur])
        self.cur ^= 1

    def trace(self, steps: int = 20) -> list[np.ndarray]:
        out = []
        for _ in range(steps):
            self.step()
            st = self.sets[self.cur]
            out += [self.logits.copy(), *(np.concatenate([st[q] for q in parts], axis=-1)
                                          for base, parts in self.canon.items() if base != "features")]
        return out


def profile(graph: bytes, batch: int, calls: int = 30) -> dict[str, float]:
    """ONNX Runtime's profiler through the same IO binding: per op type, the sum over nodes of each
    node's median kernel time (us per call; wall time, so only a rough split on a loaded machine);
    `state update` is the part of it spent in the six state-update nodes of every layer (the
    chunks' Slices and Concats of a tiled graph not included)."""
    import collections
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kwm-profile-") as tmp:
        r = Stepper(graph, {"session.profile": "1"}, batch, profile_prefix=os.path.join(tmp, "p"))
        for _ in range(calls):
            r.step()
        with open(r.s.end_profiling()) as f:
            events = json.load(f)
    times, ops = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"]].append(e["dur"])
            ops[e["name"]] = e["args"]["op_name"]
    proto = onnx.load_from_string(graph)
    update = {n.name for n in proto.graph.node if n.op_type in ("Mul", "Exp", "Add", "MatMul")
              and any(n.output[0].endswith(t) for t in (".dtA", ".decay", ".decayed", ".input", ".new_state", ".y"))}
    for layer in state_updates(proto.graph) if not update else ():
        update |= {layer[k].name for k in ("dt_mul", "exp", "decay_mul", "outer", "add", "readout")}
    per_op: collections.Counter = collections.Counter()
    in_update = 0.0
    for name, durs in times.items():
        t = float(np.median(durs[3:]))
        per_op[ops[name]] += t
        if name[: -len("_kernel_time")].split("/MatmulTransposeFusion")[0] in update:
            in_update += t
    return {"state update": in_update, **dict(per_op.most_common())}


def parse_variant(spec: str) -> tuple[str, dict]:
    """`GRAPH[@K=V,...][#TAG]`: a graph variant, its session options; a #tag repeats a variant as a control."""
    graph, _, opts = spec.partition("#")[0].partition("@")
    return graph, dict(kv.split("=", 1) for kv in opts.split(",") if kv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="kwm-causal-192-12")
    ap.add_argument("--variants", default="export,outer-matmul,outer-mul,tiled-16x4,tiled-8x8,export@mempattern=0,"
                    "export@order=priority,export@level=ext")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--parity-batches", default="1,5,64,70", help="batches of the parity check (any size, "
                    "not only the timed ones: a tiled graph's chunks must cover every batch)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.15, help="per session, batch and round")
    ap.add_argument("--sessions", type=int, default=3, help="sessions per variant and batch")
    ap.add_argument("--profile", action="store_true", help="also ONNX Runtime's kernel time by op type per graph")
    ap.add_argument("--out", help="also write the Markdown here (with the command line)")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    batches = [int(b) for b in args.batches.split(",")]
    exported = export(args.model)
    graphs = {g: variant_graph(g, exported) for g in dict.fromkeys(parse_variant(v)[0] for v in variants)}
    blobs = {g: p.SerializeToString() for g, p in graphs.items()}
    load0 = os.getloadavg()
    lines = []
    parity_batches = [int(x) for x in args.parity_batches.split(",") if x]
    diffs: dict = {v: [] for v in variants[1:]}
    for b in parity_batches:  # every variant's logits and new state vs the first's, same inputs, 20 steps
        ref = Stepper(blobs[parse_variant(variants[0])[0]], parse_variant(variants[0])[1], b).trace()
        for v in variants[1:]:
            got = Stepper(blobs[parse_variant(v)[0]], parse_variant(v)[1], b).trace()
            diffs[v].append(max(float(np.abs(x - y).max()) for x, y in zip(got, ref)))
    lines.append(f"Parity vs {variants[0]}, max |diff| of logits and new states over 20 steps from a random state, "
                 f"at batches {', '.join(map(str, parity_batches))}:")
    lines.append("")
    lines += [f"- {v}: {', '.join(f'{d:.3g}' for d in ds)}" for v, ds in diffs.items()]
    keys = [(v, b, s) for v in variants for b in batches for s in range(args.sessions)]
    random.Random(1).shuffle(keys)  # creation order is not variant order (the first sessions ran slower)
    runs = {k: Stepper(blobs[parse_variant(k[0])[0]], parse_variant(k[0])[1], k[1], seed=k[2]) for k in keys}
    for r in runs.values():
        for _ in range(3):
            r.step()
    cpu: dict = {k: [] for k in runs}
    order, rng, clock = list(runs), random.Random(0), time.thread_time_ns
    for _ in range(args.rounds):
        rng.shuffle(order)
        for k in order:
            r, per_call = runs[k], []
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end or len(per_call) < 3:
                c0 = clock()
                r.step()
                per_call.append((clock() - c0) / 1e3)
            cpu[k].append(float(np.median(per_call)))
    load1 = os.getloadavg()
    rows = ["| variant | nodes | batch | CPU us per call (median) | x first variant (median of per-round ratios) | ratio IQR |",
            "|---|---:|---:|---:|---:|---|"]
    for b in batches:
        def per_round(v):
            return np.mean([cpu[(v, b, s)] for s in range(args.sessions)], axis=0)

        base = per_round(variants[0])
        for v in variants:
            ratio = per_round(v) / base
            all_calls = np.concatenate([cpu[(v, b, s)] for s in range(args.sessions)])
            q1, q3 = np.percentile(ratio, [25, 75])
            rows.append(f"| {v} | {len(graphs[parse_variant(v)[0]].graph.node)} | {b} | {np.median(all_calls):,.0f} | "
                        f"{np.median(ratio):.3f} | {q1:.3f}-{q3:.3f} |")
    if args.profile:
        lines += ["", "ONNX Runtime's profiler, same IO binding, kernel time by op type (us per call, median of 27 "
                  "calls per node, summed; wall time):", ""]
        for b in batches:
            for g, blob in blobs.items():
                ops = profile(blob, b)
                update = ops.pop("state update")
                top = ", ".join(f"{k} {v:,.0f}" for k, v in list(ops.items())[:9])
                lines.append(f"- {g}, batch {b}: {sum(ops.values()):,.0f} in all, {update:,.0f} of it in the state "
                             f"update's six nodes per layer; {top}")
    text = "\n".join([f"{args.model}, fp32 1-frame step, ONNX Runtime 1 thread, {args.sessions} sessions per variant, "
                      f"{args.rounds} shuffled rounds of {args.seconds} s each; load average {load0[0]:.2f} at the start, "
                      f"{load1[0]:.2f} at the end", "", *rows, "", *lines]) + "\n"
    print(text)
    if args.out:
        cmd = "python benchmarks/bench_kwm_state_update.py " + " ".join(argv if argv is not None else sys.argv[1:])
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"`{cmd}`\n\n{text}")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
