"""Benchmark output: benchmark.json (everything), benchmark.csv and benchmark.md (COLUMNS), written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

# Every column of the CSV and the Markdown table, with what it means (the README points here).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "registry name (or the peer)"),
    ("runtime", "torch (eager), ort (ONNX Runtime through kwsdeploy.runtime), tensorrt, pymicro-wakeword"),
    ("precision", "fp32, fp16 or int8"),
    ("mode", "step (exact step form), windowed (98-frame recompute every packet), offline (one 1 s clip per call)"),
    ("packet_frames", "feature frames (10 ms each) per call"),
    ("batch", "independent streams per call"),
    ("status", "ok, skipped or failed"),
    ("reason", "why a row did not run (one line)"),
    ("weights", "demo checkpoint or random init (latency does not depend on the values)"),
    ("params", "parameters of the model"),
    ("macs_per_call", "multiply-accumulates per call per stream (frontend included with --frontend)"),
    ("macs_per_second", "MACs per second of audio per stream"),
    ("file_bytes", "size of the ONNX graph file"),
    ("nodes", "nodes of the ONNX graph"),
    ("weight_bytes", "bytes of the graph's constants (torch: parameters and buffers)"),
    ("state_bytes", "bytes of the state one stream reads per call (it writes as many): ring buffers, SSM state"),
    ("p50_us", "median wall time per call, microseconds"),
    ("p90_us", "90th percentile per call"),
    ("p99_us", "99th percentile per call"),
    ("calls", "timed calls (after the warm-up)"),
    ("cpu_ms_per_s", "process CPU milliseconds per second of audio per stream"),
    ("cpu_us_per_call", "process CPU microseconds per call (a shared machine's other jobs inflate wall time, less this)"),
    ("rtf", "real-time factor: mean wall time per call / audio per call (< 1 keeps up)"),
    ("streams_per_core", "real-time streams one core sustains at this batch (audio seconds per CPU second)"),
    ("accuracy", "with --data: keyword detection accuracy on the long recording (offline: top-1 on clips)"),
    ("fa_per_hour", "with --data: false alarms per hour of that recording"),
    ("bound_us", "physical bound per call: max((weight bytes + 2 x state bytes x batch) / bandwidth at that size, "
                 "MACs x batch / GEMM peak); benchmark.json also has each term and the bound without the state"),
    ("bound_kind", "which term binds: memory or compute"),
    ("measured_over_bound", "p50_us / bound_us"),
    ("cpu_over_bound", "cpu_us_per_call / bound_us"),
    ("max_abs_diff_vs_torch", "max |logits - torch logits| over the first packets from the zero state (batch 1)"),
    ("backend_p50_us", "median of the runner contract's own per-call timing (the backend call alone)"),
    ("int8_recipe", "INT8 table rows: the recipe, and for cpu the variant it chose (fp32 when none is faster)"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)
STEM = "benchmark"
MD_TITLE = "# kwsdeploy benchmark"


def _kinds():
    """The report kinds of benchmark.json/.csv/.md: recognised by the schema field, the header row's
    leading columns and the title line that this module writes."""
    from kwsdeploy.atomic import ReportKind, json_report

    return {
        "json": json_report("benchmark report", lambda d: isinstance(d, dict) and "schema" in d and "rows" in d
                            and "environment" in d),
        "csv": ReportKind("benchmark table", lambda t: t.split("\n", 1)[0].startswith(",".join(COLUMN_NAMES[:3]) + ",")),
        "md": ReportKind("benchmark report", lambda t: t.split("\n", 1)[0] == MD_TITLE),
    }


def report_paths(out: Path) -> dict[str, Path]:
    """benchmark.json, .csv and .md under `out`, by suffix."""
    return {ext: Path(out) / f"{STEM}.{ext}" for ext in ("json", "csv", "md")}


def check_out(out: Path) -> None:
    """Refuse (OutputError) before any timing when `out` holds a same-named file kwsdeploy did not write."""
    from kwsdeploy.atomic import check_report_file

    kinds = _kinds()
    for ext, path in report_paths(out).items():
        check_report_file(path, kinds[ext])


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with COLUMNS, in that order (empty cell for a missing value)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMN_NAMES), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMN_NAMES})
    return buf.getvalue()


def fmt(v: Any) -> str:
    """A cell: 3 significant digits, thousands grouped for big numbers, '-' for missing."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)


def to_markdown(result: dict[str, Any]) -> str:
    """The report: environment, machine bounds, one table row per JSON row (COLUMNS), notes."""
    env, m, s = result["environment"], result["machine"], result["settings"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    bw = ", ".join(f"{_size(int(k))} {v / 1e9:.0f} GB/s" for k, v in m["bandwidth"].items())
    lines = [
        MD_TITLE,
        "",
        f"Machine: {env['cpu']} ({', '.join(env['cpu_flags']) or 'no SIMD flags read'}), {env['usable_cpus']} usable of "
        f"{env['logical_cpus']} logical CPUs, {env['os']}, GPU: {env['gpu'] or 'none'}. {libs}. "
        f"Load average {env['load_average_at_start']} at start, {env.get('load_average_at_end')} at end.",
        "",
        f"Settings: {env['threads']} thread(s), device {s['device']}, frontend in the graph: "
        f"{'yes' if s['frontend'] else 'no'}, up to {s['calls']} timed calls per row after {s['warmup']} warm-up calls "
        f"(at most ~{s['max_seconds']} s), in {s.get('rounds', 1)} interleaved rounds over all rows (a shared machine's "
        f"load falls on every row alike), the same {s['audio_seconds']:g} s of audio for every row, state carried "
        "between calls (ONNX Runtime: IO binding, ping-pong state), perf_counter_ns around each StepRunner.step().",
        "",
        f"Physical bound: {m['method']} Bandwidth: {bw}. GEMM peak: fp32 {m['peak_macs']['fp32'] / 1e9:.1f} GMAC/s, "
        f"int8 {m['peak_macs']['int8'] / 1e9:.1f} GMAC/s.",
        "",
        "| " + " | ".join(COLUMN_NAMES) + " |",
        "|" + "|".join("---" for _ in COLUMN_NAMES) + "|",
    ]
    for r in result["rows"]:
        lines.append("| " + " | ".join(fmt(r.get(k)).replace("|", "/") for k in COLUMN_NAMES) + " |")
    lines += ["", "Columns:", ""] + [f"- `{k}`: {d}" for k, d in COLUMNS]
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", f"Total run time {result['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def write(result: dict[str, Any], out: Path) -> list[Path]:
    """benchmark.json, .csv, .md (and the plots when matplotlib is there) under `out`."""
    from kwsdeploy.atomic import write_report
    from kwsdeploy.bench import plots

    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    by_ext, kinds = report_paths(out), _kinds()
    pngs, note = plots.write_all(result, out)
    if note and note not in result["notes"]:
        result["notes"].append(note)
    texts = {"json": json.dumps(result, indent=1) + "\n", "csv": to_csv(result["rows"]), "md": to_markdown(result)}
    for ext, text in texts.items():
        write_report(by_ext[ext], text, kinds[ext])
    return list(by_ext.values()) + pngs
