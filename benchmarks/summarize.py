#!/usr/bin/env python
"""The README's benchmark tables from the results of `run_benchmark.sh`: the issue's targets side by side
(each ratio from one run) and the streaming table. Prints Markdown. The reference-size KWM targets are
judged on CPU time per call where the results have it (on a shared machine wall time includes the
other jobs' time slices); both figures are printed.

    python benchmarks/summarize.py [benchmarks/results/<machine>]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DIRECT_DFT_MACS = 2 * 241 * 480 + 2 * 241 + 241 * 40 + 40 * 40  # the 480 x 482 DFT conv, power, mel, DCT
DIRECT_DFT_BYTES = (482 * 480 + 241 * 40 + 40 * 40) * 4


def _rows(folder: Path, name: str) -> list[dict]:
    path = folder / name / "benchmark.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def _ok(rows, **match) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())]


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def frontend_facts() -> tuple[int, int]:
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.features import MFCC, frontend_macs_per_frame

    cfg = FeatureConfig.deployable()
    m = MFCC(cfg)
    consts = sum(b.numel() * b.element_size() for n, b in m.named_buffers() if n != "mel_fb")
    return frontend_macs_per_frame(cfg), consts


def targets(folder: Path) -> list[str]:
    out = ["| target | measured (one run each) | met |", "|---|---|---|"]
    macs, consts = frontend_facts()
    out.append(f"| frontend MACs per frame <= 1/4 of the direct DFT's | {macs:,} vs {DIRECT_DFT_MACS:,} "
               f"({macs / DIRECT_DFT_MACS:.2f}x) | {'yes' if macs * 4 <= DIRECT_DFT_MACS else 'no'} |")
    out.append(f"| frontend constants <= 100 KB | {consts / 1000:.1f} KB (direct: {DIRECT_DFT_BYTES / 1000:.0f} KB) | "
               f"{'yes' if consts <= 100_000 else 'no'} |")
    s = _rows(folder, "streaming")
    peer = next(iter(_ok(s, runtime="pymicro-wakeword")), None)
    for model, goal in (("tcresnet8-causal", 0.5), ("kwm-causal-64-4", 2.0)):
        mine = [r for r in _ok(s, model=model, batch=1) if r["audio_ms_per_call"] <= 100]
        if mine and peer:
            best = min(mine, key=lambda r: r["cpu_ms_per_s"])
            ratio = best["cpu_ms_per_s"] / peer["cpu_ms_per_s"]
            out.append(f"| {model} CPU per second of audio, frontend in, 1 thread, <= 100 ms packets: <= {goal}x "
                       f"microWakeWord okay_nabu | {best['cpu_ms_per_s']:.2f} vs {peer['cpu_ms_per_s']:.2f} ms/s "
                       f"({best['packet_frames']}-frame packets, {best['precision']}): {ratio:.2f}x | "
                       f"{'yes' if ratio <= goal else 'no'} |")
    ref = _rows(folder, "reference-size")
    step = next(iter(_ok(ref, mode="step", batch=1)), None)
    win = next(iter(_ok(ref, mode="windowed", batch=1)), None)
    b64 = next(iter(_ok(_rows(folder, "reference-size-batch64"), mode="step", batch=64, precision="fp32")), None)
    for r, label in ((step, "batch 1"), (b64, "batch 64")):
        if r:
            old = r.get("weights_only_bound_us")  # the bound without the state's bytes, for comparison
            was = f"; bound without the state's bytes {_fmt(old)} us" if old else ""
            cpu = r.get("cpu_over_bound")
            cpu_txt = f"; CPU {_fmt(r['cpu_us_per_call'])} us per call: **{cpu:.1f}x**" if cpu else ""
            judged = cpu if cpu is not None else r["measured_over_bound"]  # CPU time: other jobs' slices excluded
            out.append(f"| kwm-causal-192-12 step (fp32, ORT, 1 thread) within 3x of its bound, {label} | "
                       f"bound {_fmt(r['bound_us'])} us ({r['bound_kind']}; memory term: weights + state in and out, "
                       f"{_fmt(r.get('bound_bytes', 0) / 1e6)} MB, {_fmt(r.get('memory_bound_us'))} us{was}); "
                       f"p50 wall {_fmt(r['p50_us'])} us: {r['measured_over_bound']:.1f}x{cpu_txt} | "
                       f"{'yes' if judged <= 3 else 'no'} |")
    if step and win:
        ratio = win["p50_us"] / step["p50_us"]
        cpu = (win["cpu_us_per_call"] / step["cpu_us_per_call"]) if step.get("cpu_us_per_call") and win.get("cpu_us_per_call") else None
        cpu_txt = f"; CPU {_fmt(step['cpu_us_per_call'])} vs {_fmt(win['cpu_us_per_call'])} us: **{cpu:.0f}x**" if cpu else ""
        judged = cpu if cpu is not None else ratio
        out.append(f"| step >= 30x cheaper per 10 ms hop than recomputing the 1 s window (kwm-causal-192-12, "
                   f"ORT fp32) | p50 wall {_fmt(step['p50_us'])} vs {_fmt(win['p50_us'])} us per hop: {ratio:.0f}x"
                   f"{cpu_txt} | {'yes' if judged >= 30 else 'no'} |")
    q = _rows(folder, "reference-size-int8")  # issue 17: the cpu recipe against fp32, same run, CPU per call
    for b in (1, 64):
        fp32 = next(iter(_ok(q, mode="step", batch=b, precision="fp32")), None)
        int8 = next(iter(_ok(q, mode="step", batch=b, precision="int8-cpu")), None)
        if fp32 and int8 and fp32.get("cpu_us_per_call") and int8.get("cpu_us_per_call"):
            ratio, recipe = fp32["cpu_us_per_call"] / int8["cpu_us_per_call"], int8.get("int8_recipe") or "-"
            out.append(f"| kwm-causal-192-12 cpu recipe (int8-cpu, ORT, 1 thread) >= 1.5x fp32, batch {b} | "
                       f"{ratio:.2f}x CPU per call ({recipe}) | {'yes' if ratio >= 1.5 else 'no'} |")
    for name, what in (("batched", "features in"), ("batched-frontend", "audio in, frontend included")):
        rows = _ok(_rows(folder, name), model="tcresnet8-causal")
        if rows:
            best = max(rows, key=lambda r: r["streams_per_core"])
            out.append(f"| one core sustains >= 5,000 real-time tcresnet8-causal streams, batched ({what}) | "
                       f"{best['streams_per_core']:,.0f} at batch {best['batch']} | "
                       f"{'yes' if best['streams_per_core'] >= 5000 else 'no'} |")
    return out


def streaming_table(folder: Path) -> list[str]:
    s = _rows(folder, "streaming")
    peer = next(iter(_ok(s, runtime="pymicro-wakeword")), None)
    out = ["| model | packet | runtime / precision | p50 us per call | CPU ms per s of audio | x okay_nabu | "
           "nodes | graph KB | p50 / bound |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in _ok(s):
        rel = r["cpu_ms_per_s"] / peer["cpu_ms_per_s"] if peer else None
        out.append(f"| {r['model']} | {r.get('packet_frames') or '-'} | {r['runtime']} / {r['precision']} | "
                   f"{_fmt(r['p50_us'])} | {r['cpu_ms_per_s']:.2f} | {_fmt(rel)} | {_fmt(r.get('nodes'))} | "
                   f"{_fmt(r['file_bytes'] / 1000 if r.get('file_bytes') else None)} | "
                   f"{_fmt(r.get('measured_over_bound'))} |")
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else None
    if folder is None:
        from kwsdeploy.bench.environment import machine_slug

        folder = Path("benchmarks/results") / machine_slug()
    print("\n".join(targets(folder)))
    print()
    print("\n".join(streaming_table(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
