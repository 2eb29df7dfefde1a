#!/usr/bin/env python
"""The MFCC frontend step graph alone: the factorised DFT (two MatMul stages) against the direct
480 x 482 DFT convolution, side by side in interleaved rounds (ONNX Runtime, 1 thread), per packet
size and batch. Writes benchmarks/results/<machine>/frontend.md and prints it.

    python benchmarks/bench_frontend.py [--packets 1,8] [--batches 1,64] [--rounds 10] [--calls 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def frontend_graph(packet: int, dft: str = "factorised"):
    """The MFCC frontend step graph alone, as a bundle's step graph embeds it (`packet` frames per call,
    deployable features); `dft="direct"`: with the 480 x 482 DFT convolution instead of the factorised DFT."""
    import torch

    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.exporters.onnx import export_frontend_step
    from kwsdeploy.features import dft_basis
    from kwsdeploy.streaming.frontend import StreamingMFCC

    cfg = FeatureConfig.deployable()

    class Spec:
        feature_config, packet_frames = cfg, packet

    front = StreamingMFCC(cfg).eval()
    if dft == "direct":
        front.mfcc.factors = None
        front.mfcc.dft_kernel = torch.from_numpy(dft_basis(cfg.n_fft, cfg.win_length)[:, None, :]).float()
    return export_frontend_step(front, Spec(), exporter="legacy")


def _graphs(packet: int) -> dict[str, object]:
    return {name: frontend_graph(packet, name) for name in ("factorised", "direct")}


def main() -> int:
    from kwsdeploy.bench.environment import describe, machine_slug
    from kwsdeploy.exporters.simplify import node_count
    from kwsdeploy.runtime.ort import make_session

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", default="1,8")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    cases = []
    for packet in (int(x) for x in a.packets.split(",")):
        for name, proto in _graphs(packet).items():
            consts = sum(int(np.prod(i.dims)) * (4 if i.data_type == 1 else 8 if i.data_type == 7 else 4)
                         for i in proto.graph.initializer)
            for batch in (int(x) for x in a.batches.split(",")):
                sess = make_session(proto.SerializeToString(), threads=1)
                rng = np.random.default_rng(0)
                feed = {"audio": (0.1 * rng.standard_normal((batch, 160 * packet))).astype(np.float32),
                        "state.frontend.samples": np.zeros((batch, 320), np.float32)}
                for _ in range(10):
                    sess.run(None, feed)
                cases.append({"dft": name, "packet": packet, "batch": batch, "nodes": node_count(proto),
                              "const_bytes": consts, "sess": sess, "feed": feed, "ns": []})
    per_round = max(1, a.calls // a.rounds)
    for _ in range(a.rounds):  # interleaved: every case in every round
        for c in cases:
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                c["sess"].run(None, c["feed"])
                c["ns"].append(time.perf_counter_ns() - t0)
    env = describe(1)
    lines = ["# MFCC frontend step graph: factorised vs direct DFT", "",
             f"`python benchmarks/bench_frontend.py --packets {a.packets} --batches {a.batches} --rounds {a.rounds} "
             f"--calls {a.calls}`; {env['cpu']}, 1 thread, onnxruntime {env['libraries']['onnxruntime']}, load average "
             f"{env['load_average_at_start']} at start; {a.rounds} interleaved rounds.", "",
             "| DFT | packet frames | batch | nodes | constants KB | p50 us per call | us per frame per stream | "
             "direct / factorised |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    p50 = {(c["dft"], c["packet"], c["batch"]): float(np.median(c["ns"])) / 1e3 for c in cases}
    for c in cases:
        t = p50[(c["dft"], c["packet"], c["batch"])]
        ratio = p50[("direct", c["packet"], c["batch"])] / p50[("factorised", c["packet"], c["batch"])]
        lines.append(f"| {c['dft']} | {c['packet']} | {c['batch']} | {c['nodes']} | {c['const_bytes'] / 1000:.1f} | "
                     f"{t:.1f} | {t / (c['packet'] * c['batch']):.2f} | {ratio:.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out) if a.out else Path("benchmarks/results") / machine_slug() / "frontend.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
