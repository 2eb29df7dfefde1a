"""benchmarks/int8_ablation.py's Markdown: one table writer per study (gate, calib, drift; state uses
the gate's)."""

from __future__ import annotations

import math


def _head(title: str, argv: list[str], about: str, columns: list[str], align: str) -> list[str]:
    """Title, command, what was measured, and the table's header rows."""
    return [f"# {title}", "", f"Command: `python benchmarks/int8_ablation.py {' '.join(argv)}`", "", about, "",
            "| " + " | ".join(columns) + " |", align]


def drift_markdown(rows: list[dict], title: str, argv: list[str]) -> str:
    lines = _head(title, argv,
             "Both graphs free-running from the zero state over one long stream: the 64 calibration clips (train "
             "split) joined by 1-2 s noise gaps, as the eval-stream recording is built. Per layer: SQNR (dB) of "
             "its output, INT8 vs fp32, in each quarter of the stream (a fall from quarter to quarter is drift); "
             "isolated: the layer alone on the calibration tuples (the per-layer floor's figure).",
             ["model", "graph", "layer", "quantized", "isolated", "stream SQNR per quarter"], "|---|---|---|---|---:|---|")
    for r in rows:
        iso = "-" if r["isolated_sqnr_db"] is None else f"{r['isolated_sqnr_db']:.1f}"
        lines.append(f"| {r['model']} | {r['graph']} | `{r['layer']}` | {'yes' if r['quantized'] else 'float'} | {iso} | "
                     f"{' / '.join(f'{x:.1f}' for x in r['stream_sqnr_db'])} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], title: str, argv: list[str]) -> str:
    lines = _head(title, argv,
             "Held-out: demo corpus test split (jackson, 110 clips, unseen speaker; one clip = 0.9 points), each "
             "streamed from the zero state through the ONNX Runtime step runner; stream: 40 test clips joined by "
             "noise (`eval-stream` recording). Stream SQNR: logits of INT8 vs fp32, both free-running on the "
             "calibration streams (train split, 64 clips).",
             ["model", "variant", "layers kept float by the gate", "stream SQNR (dB)", "top-1", "d top-1", "stream",
              "d stream", "FA/h", "weights vs fp32"], "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = {}
    for r in rows:
        if r["variant"] == "fp32":
            ref[r["model"]] = r
        f = ref[r["model"]]
        sq = r.get("stream_sqnr_db")
        lines.append(
            f"| {r['model']} | {r['variant']} | {r.get('gate_layers', '-')} | "
            f"{'-' if sq is None or math.isinf(sq) else f'{sq:.1f}'} | {100 * r['top1']:.1f} | "
            f"{100 * (r['top1'] - f['top1']):+.1f} | {100 * r['stream']['accuracy']:.1f} | "
            f"{100 * (r['stream']['accuracy'] - f['stream']['accuracy']):+.1f} | "
            f"{r['stream']['false_alarms_per_hour']:.0f} | {r['weights_vs_fp32']:.2f}x |")
    return "\n".join(lines) + "\n"


def calib_markdown(rows: list[dict], title: str, argv: list[str], about: str = "") -> str:
    lines = _head(title, argv, about,
                  ["model", "recipe", "variant", "float layers", "calib stream SQNR (dB)", "held-out logits SQNR (dB)",
                   "agrees with fp32", "top-1", "d top-1", "stream", "d stream", "FA/h", "weights vs fp32"],
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = {}
    for r in rows:
        if r["variant"] == "fp32":
            ref[r["model"]] = r
        f = ref[r["model"]]
        sq, lq = r.get("stream_sqnr_db"), r.get("clip_logits_sqnr_db")
        st, fs = r.get("stream"), f.get("stream")
        stream = (f"{100 * st['accuracy']:.2f} | {100 * (st['accuracy'] - fs['accuracy']):+.2f} | "
                  f"{st['false_alarms_per_hour']:.0f}") if st and fs else "- | - | -"
        lines.append(
            f"| {r['model']} | {r.get('recipe', '-')} | {r['variant']} | {r.get('float_layers', '-')} | "
            f"{'-' if sq is None or math.isinf(sq) else f'{sq:.1f}'} | "
            f"{'-' if lq is None or math.isinf(lq) else f'{lq:.1f}'} | {100 * r['agreement_with_fp32']:.2f} | "
            f"{100 * r['top1']:.2f} | {100 * (r['top1'] - f['top1']):+.2f} | {stream} | {r['weights_vs_fp32']:.2f}x |")
    return "\n".join(lines) + "\n"
