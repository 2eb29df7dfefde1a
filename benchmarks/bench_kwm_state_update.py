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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kwm_state_rewrites import PART, state_updates, variant_graph  # noqa: E402


def export(model: str) -> onnx.ModelProto:
    from kwsdeploy.bench.subjects import SubjectKey, prepare

    return prepare(SubjectKey(model, "step", 1, False)).onnx_graph()


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
                out.update(zip(parts, np.split(full, len(parts), axis=-1)))
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
    # A rewrite's six nodes per piece end in these names, except a d-split piece's Add: it writes the
    # piece's new state (dsplitK.newI, or the graph output new_state.<layer>.ssm.partI).
    pieces = (".dtA", ".decay", ".decayed", ".input", ".new_state", ".y")
    update = {n.name for n in proto.graph.node if n.op_type in ("Mul", "Exp", "Add", "MatMul")
              and (n.output[0].endswith(pieces) or PART in n.output[0]
                   or (n.op_type == "Add" and n.output[0].startswith("dsplit")))}
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
