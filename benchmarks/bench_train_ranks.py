#!/usr/bin/env python
"""Training throughput over ranks: time per epoch, clips/s (all ranks and per rank) and data-wait
share of `kwsdeploy train --nproc N` for N in --ranks, side by side in one run, and how far the final
weights of N ranks are from one process's (same global batch, same seed).

Each run trains --epochs epochs on --data (default: the embedded demo corpus) with the reference
preset at --batch-size (the global batch), reading the figures from the run's metrics.jsonl; the
first epoch (warm-up, compilation) is left out of the medians when there are more. Writes
benchmarks/results/<stem>.{json,md}, the device (CPU or GPU model) named.

    python benchmarks/bench_train_ranks.py [--models tcresnet8,kwt-1] [--ranks 1,2] [--device cpu|cuda]
        [--epochs 3] [--batch-size 128] [--num-workers 0] [--threads 1] [--data DIR] [--stem NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1


def device_name(device: str) -> str:
    """The GPU's name for CUDA runs, else the CPU's model name."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_one(model: str, ranks: int, args, work: Path) -> dict[str, Any]:
    out = work / f"{model}-{ranks}"
    cmd = [sys.executable, "-m", "kwsdeploy", "train", "--out", str(out), "--model", model, "--preset", "reference",
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device,
           "--num-workers", str(args.num_workers), "--no-progress", "--seed", "0"]
    if args.data:
        cmd += ["--data", str(args.data)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if ranks > 1:
        cmd += ["--nproc", str(ranks)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] if len(rows) > 1 else rows
    return {
        "model": model, "ranks": ranks, "epochs": len(rows), "batch_size": args.batch_size,
        "epoch_time_s": statistics.median(r["epoch_time_s"] for r in timed),
        "first_epoch_time_s": rows[0]["epoch_time_s"],
        "clips_per_s": statistics.median(r["clips_per_s"] for r in timed),
        "clips_per_s_per_rank": statistics.median(sum(r["clips_per_s_per_rank"]) / ranks for r in timed),
        "data_wait_share": statistics.median(r["data_wait_share"] for r in timed),
        "last_train_loss": rows[-1]["train_loss"],
        "weights": str(out / "last" / "model.safetensors"),
    }


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def max_weight_diffs(a: str, b: str) -> tuple[float, float]:
    """Max |a - b| over the trained parameters, and over the BatchNorm running statistics."""
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    diffs = {k: float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].numel()}
    params = [v for k, v in diffs.items() if not k.endswith(BUFFERS)]
    stats = [v for k, v in diffs.items() if k.endswith(BUFFERS)]
    return max(params, default=0.0), max(stats, default=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tcresnet8,kwt-1")
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (0: torch's default)")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--stem", default=None, help="result file name (default: train_ranks_<device>)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kws-ranks-") as tmp:
        for m in models:
            first = None
            for n in ranks:
                row = run_one(m, n, args, Path(tmp))
                weights = row.pop("weights")
                first = first or weights
                row["max_param_diff_vs_first"], row["max_bn_stat_diff_vs_first"] = max_weight_diffs(first, weights)
                rows.append(row)
                print(json.dumps(row), flush=True)
    stem = args.stem or f"train_ranks_{args.device.split(':')[0]}"
    meta = {"schema": SCHEMA, "device": args.device, "device_name": device_name(args.device),
            "cpu_count": os.cpu_count(), "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "threads_per_rank": args.threads, "num_workers": args.num_workers,
            "data": str(args.data) if args.data else "embedded demo corpus (528 training clips)",
            "command": "python benchmarks/bench_train_ranks.py " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Training throughput over ranks ({meta['device_name']}, {args.device})", "",
             f"`{meta['command']}`; data: {meta['data']}; reference preset, global batch {args.batch_size}, "
             f"{args.epochs} epochs (medians of epochs 2..), {args.threads or 'default'} torch thread(s) per rank, "
             f"{args.num_workers} loader worker(s), {meta['cpu_count']} CPU cores, load average "
             f"{meta['load_average_1min'][0]} before / {meta['load_average_1min'][1]} after (ratios within one run "
             "are what to read on a shared machine).", "",
             "The last two columns compare the last weights with the first row's (same seed, same global "
             "batches): BatchNorm statistics per rank on CPU (SyncBatchNorm on CUDA) and dropout drawn per rank "
             "make them differ beyond float rounding; a model without either stays within DDP_WEIGHT_ATOL "
             "(tests/train/test_distributed.py).", "",
             "| model | ranks | s/epoch | first epoch s | clips/s | clips/s per rank | data wait | "
             "max param diff | max BN stat diff |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['ranks']} | {r['epoch_time_s']:.2f} | {r['first_epoch_time_s']:.2f} | "
                     f"{r['clips_per_s']:.0f} | {r['clips_per_s_per_rank']:.0f} | {r['data_wait_share']:.1%} | "
                     f"{r['max_param_diff_vs_first']:.2e} | {r['max_bn_stat_diff_vs_first']:.2e} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
