#!/usr/bin/env python
"""One CPU training step of the causal Keyword Mamba: the scan's hand-written backward
(`SelectiveScanFn`, the default) vs the plain-autograd scan (`_scan_sequential_ref`), side by side.

A step is what `kwsdeploy train --stream-context S` does per batch: forward_window over the clip
with S seconds of context before it, cross entropy, backward, AdamW. Two copies of one model
(same weights, same batches, same stochastic-depth draws) alternate step by step for --rounds rounds after a warm-up; the
medians (the thread's CPU time and wall time) and their ratios are reported, with the first step's losses (equal bit for bit: the two
forwards are the same maths) and the largest weight difference after all steps. Writes
benchmarks/results/<machine>/kwm_train_step.{json,md}.

    python benchmarks/bench_kwm_train_step.py [--model kwm-causal-64-4] [--batch-size 32]
        [--frames 200] [--rounds 7] [--threads 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kwsdeploy.bench.environment import cpu_flags, cpu_model, library_versions, machine_slug, usable_cpus  # noqa: E402
from kwsdeploy.contract import CLIP_FRAMES  # noqa: E402
from kwsdeploy.models import _mamba_mixer  # noqa: E402
from kwsdeploy.models.registry import create  # noqa: E402

SCHEMA = 1
PATHS = ("autograd (reference)", "SelectiveScanFn (default)")


def reference_scan():
    """While active, every mixer runs the plain-autograd scan."""
    return mock.patch.object(_mamba_mixer, "_scan_sequential", _mamba_mixer._scan_sequential_ref)


def make_step(model, opt, x, target):
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits = model.forward_window(x, CLIP_FRAMES)
        loss = F.cross_entropy(logits, target)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="kwm-causal-64-4")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=200, help="input frames per clip (200 = --stream-context 1.0)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<machine>")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref_model = create(args.model, num_classes=12).train()
    new_model = copy.deepcopy(ref_model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 1, 40, args.frames, generator=g)
    target = torch.randint(0, 12, (args.batch_size,), generator=g)
    steps = {
        PATHS[0]: (make_step(ref_model, torch.optim.AdamW(ref_model.parameters(), 1e-3), x, target), reference_scan),
        PATHS[1]: (make_step(new_model, torch.optim.AdamW(new_model.parameters(), 1e-3), x, target), nullcontext),
    }
    first_loss = {name: None for name in PATHS}
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    cpu: dict[str, list[float]] = {name: [] for name in PATHS}  # this thread's CPU time
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        for name, (step, ctx) in steps.items():
            torch.manual_seed(1000 + r)  # the same stochastic-depth masks for both copies
            with ctx():
                c0, t0 = time.thread_time(), time.perf_counter()
                loss = step()
                dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if r == 0:
                first_loss[name] = loss
            else:
                times[name].append(dt)
                cpu[name].append(dc)
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" if r else f"{n} warm-up" for n in PATHS),
              flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    speedup = med[PATHS[0]] / med[PATHS[1]]
    med_cpu = {n: statistics.median(v) for n, v in cpu.items()}
    speedup_cpu = med_cpu[PATHS[0]] / med_cpu[PATHS[1]]
    weight_diff = max((a - b).abs().max().item() for a, b in zip(ref_model.parameters(), new_model.parameters()))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "schema": SCHEMA, "model": args.model, "batch_size": args.batch_size, "frames": args.frames,
        "rounds": args.rounds, "threads": args.threads, "cpu": cpu_model(), "cpu_flags": cpu_flags(),
        "usable_cpus": usable_cpus(), "load_average_1min": load, "libraries": library_versions(),
        "median_step_s": med, "step_s": times, "speedup": speedup,
        "median_step_cpu_s": med_cpu, "step_cpu_s": cpu, "speedup_cpu": speedup_cpu,
        "first_step_loss": first_loss, "first_losses_bitwise_equal": first_loss[PATHS[0]] == first_loss[PATHS[1]],
        "max_weight_diff_after_all_steps": weight_diff,
    }
    out = args.out or ROOT / "benchmarks" / "results" / machine_slug()
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/bench_kwm_train_step.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("model", args.model), ("batch_size", args.batch_size),
                                                     ("frames", args.frames), ("rounds", args.rounds),
                                                     ("threads", args.threads)))
    lines = [
        f"# Causal KWM training step on CPU: hand-written scan backward vs autograd ({cpu_model()})", "",
        f"`{cmd}`; batch {args.batch_size} x {args.frames} frames (forward_window over the last {CLIP_FRAMES}), "
        f"cross entropy, backward, AdamW; {args.threads} torch thread(s), {usable_cpus()} usable CPU core(s), "
        f"load average {load:.1f} (1 min, at the end; the machine is shared, so read the ratio: both paths "
        f"alternate step by step in one run). torch {result['libraries'].get('torch')}.", "",
        "| scan | median CPU s/step | median wall s/step | min wall | max wall |", "|---|---:|---:|---:|---:|",
    ]
    for n in PATHS:
        lines.append(f"| {n} | {med_cpu[n]:.3f} | {med[n]:.3f} | {min(times[n]):.3f} | {max(times[n]):.3f} |")
    lines += [
        "", f"Speedup of the step: **{speedup_cpu:.2f}x** in CPU time (this thread's), {speedup:.2f}x in wall "
        f"time (medians over {args.rounds} rounds; on an oversubscribed machine wall time is the scheduler's).", "",
        f"First-step losses bitwise equal: {result['first_losses_bitwise_equal']} "
        f"({first_loss[PATHS[0]]!r} vs {first_loss[PATHS[1]]!r}); largest weight difference after "
        f"{args.rounds + 1} AdamW steps: {weight_diff:.2e} (gradients differ by float summation order only).", "",
    ]
    tmp_md, tmp_json = out / ".kwm_train_step.md.tmp", out / ".kwm_train_step.json.tmp"
    tmp_md.write_text("\n".join(lines))
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    tmp_md.replace(out / "kwm_train_step.md")
    tmp_json.replace(out / "kwm_train_step.json")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
