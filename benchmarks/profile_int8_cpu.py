"""Where the cpu INT8 recipe's step time goes: ONNX Runtime's profiler (1 thread) on the fp32 step graph
and on the cpu recipe's graph, kernel time split into what the recipe quantizes and what stays float,
and the Amdahl ceiling (the speedup over fp32 if the quantized part cost nothing).

    python benchmarks/profile_int8_cpu.py [--model kwm-causal-192-12] [--candidate dynamic-u8s8-rr]
        [--batches 1,64] [--calls 40] [--out FILE.md]

The graphs are built as `bench_int8.py`'s reference-size row builds them (random weights, seed 0, the
1-frame step graph of the bundle), the candidate with `calibration.cpu.build_candidate` (the recipe's
own builder; a dynamic candidate needs no calibration). Each graph runs through IO binding with
ping-pong state (as `OrtStepRunner`); per node, the median kernel time over the calls after the first
five; the profiler's figures are wall time, so on a loaded machine they are a split, not a speed.
Quantized part: in the INT8 graph, the integer nodes and the activation quantizers ONNX Runtime runs
for them (`QUANTIZED_OPS`); in the fp32 graph, the Conv/MatMul/Gemm nodes the recipe replaced (by name,
fusions included). Ceiling = fp32 kernel time / the INT8 graph's float remainder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

QUANTIZED_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                           "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv", "QuantizeLinear",
                           "DequantizeLinear", "QGemm", "QLinearAdd", "QLinearMul"})


def fp32_step_graph(model: str, seed: int = 0) -> onnx.ModelProto:
    """The bundle's fp32 1-frame step graph of a registry model with random weights (seed)."""
    import torch

    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.exporters.bundle import build_bundle
    from kwsdeploy.exporters.inputs import parity_clips
    from kwsdeploy.models.registry import create

    torch.manual_seed(seed)
    m = create(model).eval()
    fc = FeatureConfig.deployable(40)
    manifest, blobs, _ = build_bundle(model=m, labels=[f"class{i}" for i in range(12)], feature_config=fc,
                                      parity=parity_clips(fc), precisions=("fp32",), exporter="legacy",
                                      checkpoint={"source": f"random-init (seed {seed})", "random_init": True})
    f = next(x for x in manifest.files if x.precision == "fp32" and x.mode == "step")
    return onnx.load_from_string(blobs[f.path])


def node_times(graph: bytes, batch: int, calls: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median kernel time (us) per executed node and its op type, through IO binding, 1 thread."""
    import onnxruntime as ort

    from kwsdeploy.contract import LOGITS, is_state_name, new_state_name

    with tempfile.TemporaryDirectory(prefix="kwsdeploy-profile-") as tmp:
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.log_severity_level = 3
        o.enable_profiling, o.profile_file_prefix = True, os.path.join(tmp, "p")
        s = ort.InferenceSession(graph, o, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        shapes = {i.name: [batch, *i.shape[1:]] for i in s.get_inputs()}
        sets = [{n: ort.OrtValue.ortvalue_from_numpy((0.1 * rng.standard_normal(sh)).astype(np.float32))
                 for n, sh in shapes.items()} for _ in range(2)]
        data = next(n for n in shapes if not is_state_name(n))
        sets[1][data] = sets[0][data]
        out = s.get_outputs()[0]
        logits = ort.OrtValue.ortvalue_from_numpy(np.zeros([batch, *out.shape[1:]], np.float32))
        bindings = []
        for src, dst in ((0, 1), (1, 0)):
            b = s.io_binding()
            for n in shapes:
                b.bind_ortvalue_input(n, sets[src][n])
                if n != data:
                    b.bind_ortvalue_output(new_state_name(n), sets[dst][n])
            b.bind_ortvalue_output(LOGITS, logits)
            bindings.append(b)
        for k in range(calls):
            s.run_with_iobinding(bindings[k % 2])
        with open(s.end_profiling()) as f:
            events = json.load(f)
    durs, ops = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            durs[name].append(e["dur"])
            ops[name] = e["args"]["op_name"]
    return {n: float(np.median(d[5:] or d)) for n, d in durs.items()}, ops


def _base(name: str) -> str:
    """The graph node behind a profiled node name (ONNX Runtime appends its fusions' names)."""
    for tag in ("/MatmulTransposeFusion", "/MatMulAddFusion", "/MatMulScaleFusion", "_fusion", "/FusedMatMul"):
        name = name.split(tag)[0]
    return name


def split(times: dict[str, float], ops: dict[str, str], quantized_names: set[str] | None) -> dict:
    """Kernel time (us per call): total, in the quantized part, float remainder, and by op type."""
    total = sum(times.values())
    if quantized_names is None:  # the INT8 graph: by op type
        q = sum(t for n, t in times.items() if ops[n] in QUANTIZED_OPS)
    else:  # the fp32 graph: the nodes the recipe replaced
        q = sum(t for n, t in times.items() if _base(n) in quantized_names)
    by_op: collections.Counter = collections.Counter()
    for n, t in times.items():
        by_op[ops[n]] += t
    return {"total_us": round(total, 1), "quantized_us": round(q, 1), "float_us": round(total - q, 1),
            "by_op_us": {k: round(v, 1) for k, v in by_op.most_common(10)}}


def profile_model(model: str, candidate: str, batches, calls: int) -> dict:
    from kwsdeploy.calibration.cpu import build_candidate, quantized_layers
    from kwsdeploy.calibration.qdq import name_nodes

    proto = name_nodes(fp32_step_graph(model))
    q = build_candidate(candidate, proto, None)
    names = set(quantized_layers(proto, q))
    out = {"model": model, "candidate": candidate, "quantized_layers": len(names), "batches": {}}
    for b in batches:
        t32, o32 = node_times(proto.SerializeToString(), b, calls)
        t8, o8 = node_times(q.SerializeToString(), b, calls)
        f, i = split(t32, o32, names), split(t8, o8, None)
        out["batches"][str(b)] = {
            "fp32": f, "int8": i,
            "fp32_share_quantized": round(f["quantized_us"] / f["total_us"], 3),
            "int8_share_quantized": round(i["quantized_us"] / i["total_us"], 3),
            "speed_vs_fp32_profiled": round(f["total_us"] / i["total_us"], 3),
            "ceiling_vs_fp32": round(f["total_us"] / i["float_us"], 3),
            "ceiling_from_fp32_share": round(f["total_us"] / f["float_us"], 3),
        }
        r = out["batches"][str(b)]
        print(f"[profile] {model} b{b}: fp32 {f['total_us']:.0f} us ({100 * r['fp32_share_quantized']:.0f}% in what the "
              f"recipe quantizes), {candidate} {i['total_us']:.0f} us ({100 * r['int8_share_quantized']:.0f}% quantized); "
              f"ceiling {r['ceiling_vs_fp32']:.2f}x", file=sys.stderr)
    return out


def markdown(res: dict, argv: list[str]) -> str:
    lines = [f"# {res['model']}: the cpu INT8 recipe's step, profiled", "",
             f"Command: `python benchmarks/profile_int8_cpu.py {' '.join(argv)}`", "",
             f"{res['model']} (random weights, seed 0), cpu candidate `{res['candidate']}` ({res['quantized_layers']} "
             "layers quantized); ONNX Runtime profiler, 1 thread, kernel time per call (median per node, summed; wall "
             "time on a shared machine, and at batch 1 the profiler's per-node overhead weighs on every small node, so "
             "the speed column is a split, not the speed: `bench_int8.py` times it).", "",
             "| batch | fp32 us | of it: what the recipe quantizes | cpu recipe us | of it: quantized nodes | "
             "of it: float | speed vs fp32 (profiled) | ceiling (quantized part free) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, r in res["batches"].items():
        f, i = r["fp32"], r["int8"]
        lines.append(f"| {b} | {f['total_us']:,.0f} | {f['quantized_us']:,.0f} ({100 * r['fp32_share_quantized']:.0f}%) | "
                     f"{i['total_us']:,.0f} | {i['quantized_us']:,.0f} ({100 * r['int8_share_quantized']:.0f}%) | "
                     f"{i['float_us']:,.0f} | {r['speed_vs_fp32_profiled']:.2f}x | {r['ceiling_vs_fp32']:.2f}x |")
    for b, r in res["batches"].items():
        lines.append("")
        for k in ("fp32", "int8"):
            ops = ", ".join(f"{op} {us:,.0f}" for op, us in r[k]["by_op_us"].items())
            lines.append(f"- batch {b}, {'fp32' if k == 'fp32' else res['candidate']}, by op type (us): {ops}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="kwm-causal-192-12")
    ap.add_argument("--candidate", default="dynamic-u8s8-rr", help="cpu recipe candidate (calibration.cpu.CANDIDATES).")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--out", type=Path, default=None, help="Write FILE.md and FILE.json (default: print only).")
    args = ap.parse_args(argv)
    res = profile_model(args.model, args.candidate, [int(b) for b in args.batches.split(",")], args.calls)
    from bench_int8 import shown_argv  # same folder: the results name no machine path

    res["argv"] = shown_argv(argv if argv is not None else sys.argv[1:])
    text = markdown(res, res["argv"])
    if args.out:  # benchmarks/results/int8_cpu_profile: bench_int8.py renders its ceiling into int8.md
        from kwsdeploy.atomic import write_file  # temp sibling, then one rename: never half-written

        write_file(args.out.with_suffix(".json"), json.dumps(res, indent=1) + "\n")
        write_file(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
