"""benchmarks/bench_int8.py's targets and its Markdown (int8.md): what is met, and the tables of
accuracy, size, speed, calibration per model and the cpu recipe's Amdahl ceiling."""

from __future__ import annotations

TOP1_POINTS = 0.5
STREAM_POINTS = 2.0
SIZE_RATIO = 0.3
SIZE_MIN_PARAMS = 50_000
KWM_REF_SPEEDUP = 1.5


def check_targets(row: dict) -> dict:
    r = row["rows"]
    out = {}
    for p in ("int8-tensorrt", "int8-cpu"):
        out[f"{p} top-1 drop <= {TOP1_POINTS} pt"] = 100 * (r["fp32"]["top1"] - r[p]["top1"]) <= TOP1_POINTS
        out[f"{p} stream drop <= {STREAM_POINTS} pt"] = (
            100 * (r["fp32"]["stream"]["accuracy"] - r[p]["stream"]["accuracy"]) <= STREAM_POINTS)
    if row["params"] > SIZE_MIN_PARAMS:
        out[f"tensorrt weights <= {SIZE_RATIO}x"] = r["int8-tensorrt"]["weights_vs_fp32"] <= SIZE_RATIO
    sp = row["seconds_per_step"]
    if "int8-cpu" not in sp:
        pass
    elif r["int8-cpu"]["quantized_layers"] == 0:  # the cpu recipe shipped the fp32 graph itself
        out["cpu never slower than fp32 (fp32 graph shipped)"] = True
    else:
        out["cpu never slower than fp32 (measured)"] = all(sp["int8-cpu"][b] <= sp["fp32"][b] for b in ("1", "64"))
    return out


def _accuracy_line(rows: list[dict], env: dict) -> str:
    """What the accuracy columns were measured on (older runs: the demo corpus' 110 test clips)."""
    clips = rows[0]["rows"]["fp32"]["clips"] if rows else 110
    data = env.get("eval_data", "demo corpus [test]")
    stream = env.get("eval_stream_clips", 40) or "all"
    return (f"Accuracy: {data}, {clips} clips (one clip = {100 / clips:.2f} points), each clip streamed from the "
            f"zero state through the ONNX Runtime step runner; stream: {stream} of those clips joined by noise gaps "
            f"(`eval-stream` recording). Calibration: {env.get('calib_data', 'demo corpus [train]')}, "
            + (f"{env['calib_clips']} clips, {env['method']}." if env.get("calib_clips") else
               "per model as `export --int8` chooses (the checkpoint's preset, else 64 clips minmax): see "
               "\"Calibration per model\"."))


def _calibration_lines(rows: list[dict]) -> list[str]:
    """Per model: the checkpoint measured (weights_sha256 prefix) and the calibration it got."""
    out = ["", "## Calibration per model", "", "| model | weights_sha256 | clips | method | keep float | preset |",
           "|---|---|---:|---|---|---|"]
    for row in rows:
        c = row.get("calibration")
        if not c:
            continue
        pct = f" @{c['percentile']:g}" if c.get("percentile") else ""
        clips, method, keep = str(c["clips"]), f"{c['method']}{pct}", ", ".join(c["keep_float"]) or "-"
        cpu = c.get("cpu")
        if cpu:  # the cpu recipe's own settings (a preset's), beside the tensorrt recipe's
            cpct = f" @{cpu.get('percentile', c.get('percentile')):g}" if cpu.get("method", c["method"]) == "percentile" else ""
            clips = f"tensorrt {clips}, cpu {cpu.get('clips', c['clips'])}"
            method = f"tensorrt {method}, cpu {cpu.get('method', c['method'])}{cpct}"
            keep = f"tensorrt {keep}; cpu {', '.join(cpu.get('keep_float', c['keep_float'])) or '-'}"
        out.append(f"| {row['model']} | `{row.get('weights_sha256', '')[:12]}` | {clips} | {method} | "
                   f"{keep} | {c['preset'] or '-'} |")
    return out if len(out) > 5 else []


def profile_lines(prof: dict | None) -> list[str]:
    """The cpu recipe's Amdahl ceiling at the reference size (`profile_int8_cpu.py`'s JSON), a short section."""
    if not prof:
        return []
    out = ["", f"## {prof['model']}: where the cpu recipe's step goes (the Amdahl ceiling)", "",
           f"Command: `python benchmarks/profile_int8_cpu.py {' '.join(prof.get('argv', []))}` (full table: "
           "[int8_cpu_profile.md](int8_cpu_profile.md)). ONNX Runtime's profiler, 1 thread, kernel time per call "
           f"(wall, median per node, summed); the cpu recipe's graph `{prof['candidate']}` "
           f"({prof['quantized_layers']} projections quantized) beside fp32. Ceiling: the speedup over fp32 if the "
           "quantized part cost nothing (fp32 kernel time / the cpu graph's float remainder; from the fp32 side: "
           "fp32 / fp32 minus the layers the recipe quantizes).", "",
           "| batch | fp32 us | share the recipe quantizes (fp32) | cpu graph us | quantized nodes' share | float "
           "remainder us | ceiling | ceiling from the fp32 side |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, r in prof["batches"].items():
        f, i = r["fp32"], r["int8"]
        out.append(f"| {b} | {f['total_us']:,.0f} | {100 * r['fp32_share_quantized']:.0f} % | {i['total_us']:,.0f} | "
                   f"{100 * r['int8_share_quantized']:.0f} % | {i['float_us']:,.0f} | {r['ceiling_vs_fp32']:.2f}x | "
                   f"{r['ceiling_from_fp32_share']:.2f}x |")
    big = prof["batches"].get("64")
    if big:
        c = min(big["ceiling_vs_fp32"], big["ceiling_from_fp32_share"])
        out += ["", f"At batch 64 the layers the recipe quantizes are {100 * big['fp32_share_quantized']:.0f} % of the fp32 "
                f"step; the rest (the float state update, Softplus, the small ops) bounds the cpu recipe at "
                f"{c:.2f}-{max(big['ceiling_vs_fp32'], big['ceiling_from_fp32_share']):.2f}x over fp32, so the "
                f"{KWM_REF_SPEEDUP}x target is {'within' if c >= KWM_REF_SPEEDUP else 'out of'} reach of any recipe that "
                "keeps the recurrence float. At batch 1 the profiler's per-node overhead (hundreds of ~1 us nodes) "
                "inflates the float part: there the CPU-time timing above is the figure."]
    return out


def markdown(rows: list[dict], ref: dict | None, env: dict, argv: list[str], profile: dict | None = None) -> str:
    lines = ["# INT8: accuracy, size and speed of the tensorrt and cpu recipes", "",
             "Commands: `python benchmarks/bench_int8.py --models none` (reference size), then "
             "`python benchmarks/bench_int8.py --no-reference-size --merge --eval-data FSDD_REAL --eval-stream-clips 0 "
             "--data-name FSDD_REAL` (the shipped checkpoints, on all 550 clips of the test speaker; without "
             "--eval-data: the embedded 110); "
             "`--render` rewrites this file from the JSON. "
             "`--targets tensorrt --merge` re-measures the tensorrt recipe only (its graph not re-timed: `-`; the cpu "
             "rows and timings are the previous run's).", "",
             f"Last run: `python benchmarks/bench_int8.py {' '.join(argv)}`.", "",
             f"Machine: {env['cpu']} ({env['cores']} cores, shared), Python {env['python']}, onnxruntime "
             f"{env['onnxruntime']}; timings: 1 thread, graphs interleaved round by round, fastest round kept.", "",
             _accuracy_line(rows, env), "",
             "| model | params | precision | recipe | top-1 | d top-1 (pt) | stream | d stream (pt) | FA/h | weights vs fp32 | "
             "file vs fp32 | float layers | ms/step b1 | ms/step b64 | speed vs fp32 b1 / b64 |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r, sp = row["rows"], row["seconds_per_step"]
        for p in ("fp32", "fp16", "int8-tensorrt", "int8-cpu"):
            x = r[p]
            t = sp.get(p)
            timing = (f"{1e3 * t['1']:.3f} | {1e3 * t['64']:.2f} | {sp['fp32']['1'] / t['1']:.2f}x / "
                      f"{sp['fp32']['64'] / t['64']:.2f}x") if t else "- | - | -"
            fl = "-" if not p.startswith("int8") else ("all" if x["quantized_layers"] == 0 else str(len(x["float_layers"])))
            lines.append(
                f"| {row['model']} | {row['params']:,} | {p} | {x['recipe'] or '-'} | {100 * x['top1']:.1f} | "
                f"{100 * (x['top1'] - r['fp32']['top1']):+.1f} | {100 * x['stream']['accuracy']:.1f} | "
                f"{100 * (x['stream']['accuracy'] - r['fp32']['stream']['accuracy']):+.1f} | "
                f"{x['stream']['false_alarms_per_hour']:.0f} | {x['weights_vs_fp32']:.2f}x | {x['size_vs_fp32']:.2f}x | "
                f"{fl} | {timing} |")
    if ref:
        sp = ref["seconds_per_step"]
        lines += ["", f"## {ref['model']}", "",
                  f"{ref['params']:,} parameters; cpu recipe chose `{ref['cpu_chosen']}` at export "
                  f"(export-time speed vs fp32: {ref['cpu_export_speed_vs_fp32']})."
                  + (f" Timed in the {ref['clock']}." if ref.get("clock") else ""), "",
                  "| precision | weights vs fp32 | bytes | ms/step b1 | ms/step b64 | speed vs fp32 b1 / b64 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for p in ("fp32", "int8-cpu", "int8-tensorrt"):
            w = ref["weights_vs_fp32"].get(p, 1.0)
            lines.append(f"| {p} | {w:.2f}x | {ref['bytes'][p]:,} | {1e3 * sp[p]['1']:.3f} | {1e3 * sp[p]['64']:.2f} | "
                         f"{sp['fp32']['1'] / sp[p]['1']:.2f}x / {sp['fp32']['64'] / sp[p]['64']:.2f}x |")
    lines += profile_lines(profile)
    gated = [row for row in rows if row.get("tensorrt_gate", {}).get("stream_sqnr_rounds_db")]
    if gated:
        lines += ["", "## tensorrt: free-running stream SQNR gate", "",
                  "Logits SQNR of the INT8 graph vs fp32, both streaming the calibration clips free-running, after the "
                  "per-layer pass and after each layer the gate kept float (floor "
                  f"{gated[0]['tensorrt_gate']['stream_sqnr_floor_db']} dB). Models not listed were measured "
                  "before the gate existed.", "",
                  "| model | stream SQNR per round (dB) | layers kept float by the gate |", "|---|---|---|"]
        for row in gated:
            g = row["tensorrt_gate"]
            kept = ", ".join(f"`{k}`" for k in g["kept_float_by_stream_gate"]) or "none"
            lines.append(f"| {row['model']} | {' -> '.join(f'{x:.1f}' for x in g['stream_sqnr_rounds_db'])} | {kept} |")
    lines += _calibration_lines(rows)
    lines += ["", "## Targets", ""]
    for row in rows:
        for k, v in row["targets"].items():
            lines.append(f"- {row['model']}: {k}: {'met' if v else '**missed**'}")
    if ref:
        sp = ref["seconds_per_step"]
        for b in ("1", "64"):
            s = sp["fp32"][b] / sp["int8-cpu"][b]
            lines.append(f"- kwm-causal-192-12: cpu recipe >= {KWM_REF_SPEEDUP}x at batch {b}: "
                         f"{'met' if s >= KWM_REF_SPEEDUP else '**missed**'} ({s:.2f}x)")
        lines.append(f"- kwm-causal-192-12: tensorrt weights <= {SIZE_RATIO}x: "
                     f"{'met' if ref['weights_vs_fp32']['int8-tensorrt'] <= SIZE_RATIO else '**missed**'} "
                     f"({ref['weights_vs_fp32']['int8-tensorrt']:.2f}x)")
    return "\n".join(lines) + "\n"
