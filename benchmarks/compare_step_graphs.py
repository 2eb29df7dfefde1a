"""Time step graphs side by side: ONNX Runtime, the kwsdeploy step runner (IO binding, ping-pong
state), 1 thread, every graph at every batch size in interleaved rounds, so a shared machine's
load falls on each alike. Prints a Markdown table (p50 per call and per stream, ratio to the first
graph) and, with --profile, ONNX Runtime's per-op-type time of each graph at each batch.

    python benchmarks/compare_step_graphs.py before.onnx after.onnx [--batches 1,64] [--rounds 7]
    `--export FILE=MODEL[:PACKET[:frontend]]` exports the fp32 step graph of a registry model as
    `kwsdeploy benchmark` builds it, with the code on PYTHONPATH: two checkouts give a before/after pair;
    `--export FILE=mfcc:PACKET` the MFCC frontend step graph alone (deployable features, audio in,
    features out), timed with its sample cache carried from call to call.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def export(spec: str, out: Path) -> Path:
    """The fp32 step graph of `MODEL[:PACKET[:frontend]]` as `kwsdeploy benchmark` builds it (the demo
    checkpoint, else random init): PACKET frames per call (default 1), the MFCC frontend inside with
    `frontend` (then the graph takes audio)."""
    import onnx

    from kwsdeploy.bench.subjects import SubjectKey, prepare

    model, packet, frontend = (spec.split(":") + ["1", ""])[:3]
    if model == "mfcc":
        from bench_frontend import frontend_graph  # same folder: the frontend step graph bench_frontend.py times

        onnx.save(frontend_graph(int(packet)), str(out))
        return out
    onnx.save(prepare(SubjectKey(model, "step", int(packet), frontend == "frontend")).onnx_graph(), str(out))
    return out


class FrontendStepper:
    """`step(audio)` through a frontend step graph (no logits: not a StepRunner), its cache carried."""

    def __init__(self, model: bytes, batch: int) -> None:
        from kwsdeploy.runtime.ort import make_session

        self.session = make_session(model, threads=1)
        self.state = {i.name: np.zeros([batch, *i.shape[1:]], np.float32)
                      for i in self.session.get_inputs() if i.name.startswith("state.")}
        self.new_names = ["new_" + k for k in self.state]

    def step(self, audio: np.ndarray) -> np.ndarray:
        out = self.session.run(["features", *self.new_names], {"audio": audio, **self.state})
        self.state = dict(zip(self.state, out[1:]))
        return out[0]


def runner(path: Path, batch: int):
    import onnx

    from kwsdeploy.runtime.ort import OrtStepRunner

    model = path.read_bytes()
    if "logits" not in {o.name for o in onnx.load_from_string(model).graph.output}:
        r = FrontendStepper(model, batch)
        shape = next(i for i in r.session.get_inputs() if i.name == "audio").shape
        return r, np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    r = OrtStepRunner(model, batch=batch, threads=1)
    shape = next(i for i in r.session.get_inputs() if i.name in ("features", "audio")).shape
    x = np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)
    return r, x


def time_round(r, x, seconds: float) -> tuple[list[float], float]:
    """Per-call wall times (us) of consecutive steps for about `seconds`, and the thread's CPU time per
    call (us; ONNX Runtime with 1 intra-op thread computes on the calling thread), which a machine
    shared with other jobs inflates less than wall time."""
    out, end = [], time.perf_counter() + seconds
    c0 = time.thread_time_ns()
    while time.perf_counter() < end or len(out) < 3:
        t0 = time.perf_counter_ns()
        r.step(x)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out, (time.thread_time_ns() - c0) / 1e3 / len(out)


def profile(path: Path, batch: int, calls: int = 10) -> dict[str, float]:
    """ONNX Runtime's profiler: microseconds per call by op type (kernel time only)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "p")
        sess = ort.InferenceSession(path.read_bytes(), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.zeros([batch, *i.shape[1:]], np.float32) for i in sess.get_inputs()}
        for _ in range(calls):
            sess.run(None, feeds)
        events = json.load(open(sess.end_profiling()))
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / calls
    return dict(per_op.most_common())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graphs", nargs="*", type=Path, help="step graphs (.onnx)")
    ap.add_argument("--export", action="append", default=[], metavar="FILE=MODEL[:PACKET[:frontend]]",
                    help="first export MODEL's fp32 step graph to FILE (then time the graphs given)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.4, help="per graph, batch and round")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the Markdown here (with the command line)")
    args = ap.parse_args(argv)
    for item in args.export:
        file, _, model = item.partition("=")
        export(model, Path(file))
    if not args.graphs:
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    import onnx

    nodes = {g: len(onnx.load(str(g)).graph.node) for g in args.graphs}
    runs = {(g, b): runner(g, b) for g in args.graphs for b in batches}
    for r, x in runs.values():
        time_round(r, x, 0.05)  # warm-up
    times: dict = collections.defaultdict(list)
    cpu: dict = collections.defaultdict(list)
    for _ in range(args.rounds):
        for key, (r, x) in runs.items():
            wall, per_call = time_round(r, x, args.seconds)
            times[key] += wall
            cpu[key].append(per_call)
    load = os.getloadavg()
    lines = [f"ONNX Runtime, 1 thread, {args.rounds} interleaved rounds of {args.seconds} s per graph and batch; "
             f"load average {load[0]:.2f} at the end", "",
             "| graph | nodes | batch | p50 us per call | p50 us per stream | x first graph | CPU us per call "
             "(best round) | x first graph (CPU) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in batches:
        base = float(np.median(times[(args.graphs[0], b)]))
        cbase = min(cpu[(args.graphs[0], b)])
        for g in args.graphs:
            p50, c = float(np.median(times[(g, b)])), min(cpu[(g, b)])
            lines.append(f"| {g.name} | {nodes[g]} | {b} | {p50:,.0f} | {p50 / b:,.1f} | {p50 / base:.3f} | "
                         f"{c:,.0f} | {c / cbase:.3f} |")
    if args.profile:
        lines += ["", "ONNX Runtime's profiler, kernel time by op type (us per call, 10 calls, zero inputs):", ""]
        for b in batches:
            for g in args.graphs:
                ops = profile(g, b)
                top = ", ".join(f"{k} {v:,.0f}" for k, v in list(ops.items())[:8])
                lines.append(f"- {g.name}, batch {b}: {sum(ops.values()):,.0f} in all; {top}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        cmd = "python benchmarks/compare_step_graphs.py " + " ".join(argv if argv is not None else sys.argv[1:])
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(f"# Step graphs side by side\n\n`{cmd}`\n\n{text}")
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
