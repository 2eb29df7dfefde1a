#!/usr/bin/env python
"""Step-graph latency and size on CPU: torch eager vs ONNX Runtime, step vs windowed forms.

For every model that streams exactly (plus the windowed form of each, and the reference windowed
models) with random-init weights: export the step graph with kwsdeploy's exporter into a temp
dir, time it with ONNX Runtime (kwsdeploy.runtime's OrtStepRunner, IO binding, 1 intra-op thread by
default) and the torch step module beside it, and write benchmarks/results/step_latency_cpu.{json,md}.

    python benchmarks/bench_step_latency.py [--models NAMES|all-exact] [--repeats N] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REFERENCE_WINDOWED = ("tcresnet8", "kwt-1", "kwm-64-12")
MODES = ("step", "windowed")
RUNTIMES = ("torch", "ort")
HOP_S = 0.010  # one feature frame
RESULT_STEM = "step_latency_cpu"
SCHEMA = 1


# -- machine -------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (or platform's guess where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, OS and library versions (no paths, no host names)."""
    import onnx
    import onnxruntime
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def memory_bandwidth(megabytes: int = 64, repeats: int = 7) -> float:
    """Bytes per second moved by a large numpy copy (read + write counted), best of `repeats`."""
    src = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


# -- selection -----------------------------------------------------------------------------------
def select_rows(models: str, modes: Sequence[str]) -> list[tuple[str, str]]:
    """(card name, mode) pairs: exact cards in step and windowed form, windowed-only cards windowed."""
    from kwsdeploy.models.registry import get_card, list_cards

    if models == "all-exact":
        names = [c.name for c in list_cards() if c.streaming == "exact"] + list(REFERENCE_WINDOWED)
    else:
        names = [get_card(n.strip()).name for n in models.split(",") if n.strip()]
    rows: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):
        exact = get_card(name).streaming == "exact"
        for mode in MODES:
            if mode in modes and (mode == "windowed" or exact):
                rows.append((name, mode))
    return rows


# -- measurement ---------------------------------------------------------------------------------
def time_calls(fn: Callable[[int], Any], repeats: int, max_seconds: float, warmup: int = 3) -> np.ndarray:
    """Seconds per call of fn(i): `warmup` untimed calls, then up to `repeats` timed ones (at least
    5 even past `max_seconds`)."""
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
        if len(times) >= 5 and time.perf_counter() - start > max_seconds:
            break
    return np.asarray(times)


def latency_stats(times: np.ndarray, packet_frames: int) -> dict[str, Any]:
    """Mean / p50 / p99 per call (ms), per 100 ms of audio, and the real-time factor."""
    mean = float(times.mean())
    audio_s = packet_frames * HOP_S
    return {
        "calls_timed": int(times.size),
        "mean_ms": mean * 1e3,
        "p50_ms": float(np.percentile(times, 50)) * 1e3,
        "p99_ms": float(np.percentile(times, 99)) * 1e3,
        "ms_per_100ms_audio": mean * 1e3 * (0.1 / audio_s),
        "rtf": mean / audio_s,
    }


def torch_call_count(smodel, packet, state) -> int:
    """torch functions/tensor methods dispatched by one eager step call (the eager 'node count')."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            _Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), _Count():
        smodel(packet, *state)
    return _Count.n


def torch_weight_bytes(module) -> int:
    """Bytes of the distinct parameters and buffers of a module."""
    seen, total = set(), 0
    for t in (*module.parameters(), *module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def onnx_weight_bytes(proto) -> int:
    """Bytes of the graph's initializers and Constant-node tensors."""
    from onnx import numpy_helper

    total = sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR:
                total += numpy_helper.to_array(attr.t).nbytes
    return total


def export_graph(smodel, exporter: str, max_simplify_nodes: int) -> tuple[Any, str]:
    """The step graph as `kwsdeploy.exporters.onnx.export_step` writes it. A graph whose plain
    TorchScript export has more than `max_simplify_nodes` nodes (an unrolled 98-frame scan) skips
    the onnxscript pass, which is superlinear in graph size, and gets ORT's basic optimisation only."""
    import torch

    from kwsdeploy.exporters import onnx as kx
    from kwsdeploy.exporters.simplify import node_count, ort_basic_optimize

    spec = smodel.stream_spec
    args = (torch.randn(2, spec.n_mfcc, spec.packet_frames), *smodel.init_state(2))
    names_in, names_out = ["features", *spec.state_names], ["logits", *spec.new_state_names]
    raw = kx._export(smodel, args, names_in, names_out, kx.DEFAULT_OPSET, "legacy")
    if node_count(raw) <= max_simplify_nodes:
        proto = kx.export_step(smodel, exporter=exporter)
        used = getattr(kx, "exporter_of", lambda _: "")(proto)
        return proto, f"export_step ({exporter}{' -> ' + used if used and used != exporter else ''})"
    proto = ort_basic_optimize(raw)
    kx.check_graph(proto)
    return proto, f"legacy + ORT basic only ({node_count(raw)} raw nodes > {max_simplify_nodes})"


def bench_model(name: str, mode: str, args: argparse.Namespace, bandwidth: float, tmp: Path) -> list[dict]:
    """Torch and ORT rows for one model in one mode."""
    import torch

    from kwsdeploy.exporters.simplify import node_count, op_histogram
    from kwsdeploy.models.registry import create, get_card
    from kwsdeploy.runtime.ort import OrtStepRunner
    from kwsdeploy.streaming.convert import to_streaming
    from kwsdeploy.streaming.costs import step_costs

    card = get_card(name)
    torch.manual_seed(0)
    model = create(name).eval()
    costs = step_costs(card, model)
    smodel = to_streaming(model, mode="exact" if mode == "step" else "windowed").eval()
    spec = smodel.stream_spec
    packet = int(spec.packet_frames)
    macs_hop = costs["macs_per_hop"] if mode == "step" else costs["macs_per_hop_windowed"]
    gen = np.random.default_rng(0)
    packets = gen.standard_normal((8, 1, spec.n_mfcc, packet)).astype(np.float32)
    tpackets = [torch.from_numpy(p) for p in packets]
    base = {
        "model": card.name, "family": card.family, "mode": mode, "card_streaming": card.streaming,
        "n_mfcc": spec.n_mfcc, "packet_frames": packet, "params": sum(p.numel() for p in model.parameters()),
        "macs_per_hop": int(macs_hop) if macs_hop is not None else None,
        "macs_per_step": int(round(macs_hop * packet / 10)) if macs_hop is not None else None,
    }
    rows: list[dict] = []
    with torch.inference_mode():
        state0 = smodel.init_state(1)
        calls = torch_call_count(smodel, tpackets[0], state0)
        holder = {"state": state0}

        def torch_step(i: int):
            logits, *new = smodel(tpackets[i % len(tpackets)], *holder["state"])
            holder["state"] = new
            return logits

        if "torch" in args.runtimes:
            wbytes = torch_weight_bytes(smodel)
            times = time_calls(torch_step, args.repeats, args.max_seconds)
            rows.append({**base, "runtime": "torch", **latency_stats(times, packet), "eager_calls": calls,
                         "nodes": None, "top_ops": None, "onnx_bytes": None, "weight_bytes": wbytes,
                         "bound_us": wbytes / bandwidth * 1e6, "export": None, "max_abs_diff_vs_torch": None})
        if "ort" not in args.runtimes:
            return rows
        t0 = time.perf_counter()
        proto, how = export_graph(smodel, args.exporter, args.max_simplify_nodes)
        export_s = time.perf_counter() - t0
        path = tmp / f"{card.name}-{mode}.onnx"
        path.write_bytes(proto.SerializeToString())
        sess = OrtStepRunner(path, batch=1, threads=args.threads)
        # Same packets from the zero state through both: a cheap check that the timed graph is the model.
        holder["state"] = smodel.init_state(1)
        ref = [torch_step(i).numpy() for i in range(3)]
        sess.reset()
        diff = max(float(np.abs(sess.step(packets[i]) - ref[i]).max()) for i in range(3))
        times = time_calls(lambda i: sess.step(packets[i % len(packets)]), args.repeats, args.max_seconds)
    wbytes = onnx_weight_bytes(proto)
    hist = op_histogram(proto)
    nodes = node_count(proto)
    stats = latency_stats(times, packet)
    rows.append({**base, "runtime": "ort", **stats, "eager_calls": None, "nodes": nodes,
                 "top_ops": dict(list(hist.items())[: args.top_ops]), "onnx_bytes": path.stat().st_size,
                 "weight_bytes": wbytes, "bound_us": wbytes / bandwidth * 1e6,
                 "us_per_node": stats["p50_ms"] * 1e3 / nodes if nodes else None,
                 "export": how, "export_s": round(export_s, 1), "max_abs_diff_vs_torch": diff})
    path.unlink()
    return rows


# -- output --------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _si(v: int | None) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return str(v)


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report: machine, method, one table row per model x mode x runtime."""
    m, s = result["machine"], result["settings"]
    lines = [
        "# Step latency on CPU (random-init weights)",
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, {m['os']}; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, numpy {m['numpy']}. "
        f"Load average {m['load_average_at_start']} at start, {m.get('load_average_at_end')} at end "
        "(a shared machine: absolute times are noisy, ratios less so).",
        "",
        f"Threads: {s['threads']} (torch and ORT intra-op). Up to {s['repeats']} timed calls per row "
        f"(at most ~{s['max_seconds']} s each, after 3 warm-up calls), batch 1, random feature packets, "
        "state carried between calls. ORT rows use kwsdeploy.runtime's OrtStepRunner (IO binding, "
        "ping-pong state). Memory bandwidth "
        f"{s['bandwidth_gb_s']:.1f} GB/s, measured once by a {s['bandwidth_megabytes']} MB numpy copy "
        "(read + write bytes, best of 7); bound = weight bytes / that bandwidth, the time to stream the "
        "weights once from DRAM (these weights mostly fit in cache, so it is a floor, not a forecast).",
        "",
        "| model | mode | runtime | packet | mean ms | p50 ms | p99 ms | ms / 100 ms audio | RTF | "
        "nodes (eager calls) | ONNX KB | MACs / hop | weight KB | bound us | p50 / bound | max diff |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        nodes = str(r["nodes"]) if r["nodes"] is not None else f"({r['eager_calls']})"
        ratio = r["p50_ms"] * 1e3 / r["bound_us"] if r["bound_us"] else None
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['runtime']} | {r['packet_frames']} | {_fmt(r['mean_ms'])} | "
            f"{_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['ms_per_100ms_audio'])} | {_fmt(r['rtf'])} | "
            f"{nodes} | {_fmt(r['onnx_bytes'] / 1024 if r['onnx_bytes'] else None, 4)} | {_si(r['macs_per_hop'])} | "
            f"{_fmt(r['weight_bytes'] / 1024, 4)} | {_fmt(r['bound_us'])} | {_fmt(ratio)} | "
            f"{_fmt(r['max_abs_diff_vs_torch'], 2)} |"
        )
    lines += ["", "## ONNX graphs", "", "| model | mode | nodes | p50 us / node | top ops | export |", "|---|---|---:|---:|---|---|"]
    for r in result["rows"]:
        if r["runtime"] == "ort":
            ops = ", ".join(f"{k} {v}" for k, v in r["top_ops"].items())
            lines.append(f"| {r['model']} | {r['mode']} | {r['nodes']} | {_fmt(r['us_per_node'])} | {ops} | "
                         f"{r['export']}, {r['export_s']} s |")
    lines += ["", "RTF = mean time per call / audio per call (packet frames x 10 ms); < 1 keeps up with "
              "real time. max diff = max |logits ORT - torch| over 3 packets from the zero state. "
              "p50 / bound and us / node use the median call (robust to preemption on a shared machine); "
              "eager calls = torch functions dispatched per torch step call.",
              f"Total run time {result['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from kwsdeploy.exporters.onnx import DEFAULT_EXPORTER, EXPORTERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all-exact", help="comma-separated registry names, or all-exact (default)")
    p.add_argument("--modes", default="step,windowed", help="step, windowed or both (default)")
    p.add_argument("--runtimes", default="torch,ort", help="torch, ort or both (default)")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per row at most (default 200)")
    p.add_argument("--max-seconds", type=float, default=1.0, help="stop timing a row after this long (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ORT (default 1)")
    choices = tuple(dict.fromkeys((*EXPORTERS, DEFAULT_EXPORTER)))
    p.add_argument("--exporter", default=DEFAULT_EXPORTER, choices=choices,
                   help=f"torch.onnx path for export_step (default {DEFAULT_EXPORTER}, the project's)")
    p.add_argument("--max-simplify-nodes", type=int, default=1500,
                   help="graphs with more raw (TorchScript-exported) nodes skip the slow onnxscript pass (default 1500)")
    p.add_argument("--top-ops", type=int, default=5, help="op types listed per graph (default 5)")
    p.add_argument("--out", default="benchmarks/results", help="output folder (default benchmarks/results)")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    bad = [m for m in args.modes if m not in MODES] + [r for r in args.runtimes if r not in RUNTIMES]
    if bad:
        p.error(f"unknown mode/runtime {bad}; modes are {MODES}, runtimes {RUNTIMES}.")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from kwsdeploy.models.registry import UnknownModelError

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        todo = select_rows(args.models, args.modes)
    except UnknownModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not todo:
        print("error: nothing to run (a windowed-only model has no step row; add --modes windowed).", file=sys.stderr)
        return 2
    machine = machine_info()
    megabytes = 64
    bandwidth = memory_bandwidth(megabytes)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="kwsdeploy-bench-") as tmp:
        for name, mode in todo:
            t0 = time.perf_counter()
            new = bench_model(name, mode, args, bandwidth, Path(tmp))
            rows += new
            summary = ", ".join(f"{r['runtime']} {r['mean_ms']:.3f} ms" for r in new)
            print(f"{name:>18} {mode:<8} {summary}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {
        "schema": SCHEMA,
        "machine": machine,
        "settings": {"threads": args.threads, "repeats": args.repeats, "max_seconds": args.max_seconds,
                     "exporter": args.exporter, "max_simplify_nodes": args.max_simplify_nodes,
                     "bandwidth_gb_s": bandwidth / 1e9, "bandwidth_megabytes": megabytes,
                     "bandwidth_method": "numpy copyto of a float64 array, (read + write) bytes / best time",
                     "weights": "random init (torch.manual_seed(0)); latency does not depend on values"},
        "rows": rows,
        "wall_s": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / f"{RESULT_STEM}.json", json.dumps(result, indent=1) + "\n")
    _write_atomic(out / f"{RESULT_STEM}.md", to_markdown(result))
    print(f"wrote {out / RESULT_STEM}.json and .md ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
