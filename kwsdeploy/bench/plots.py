"""PNG plots of a benchmark (matplotlib, the optional `plot` extra; skipped with a note without it):
latency vs accuracy, CPU per second of audio by packet size, step vs window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kwsdeploy.atomic import writing_file

PLOTS = ("latency_vs_accuracy.png", "cost_by_packet.png", "step_vs_window.png")


def write_all(result: dict[str, Any], out: Path) -> tuple[list[Path], str]:
    """The plots that have data; (paths, note) where note says why some or all were skipped."""
    from kwsdeploy.plotting import pyplot

    plt = pyplot()
    if plt is None:
        return [], "plots skipped: matplotlib is not installed (pip install 'kwsdeploy[plot]')."
    ok = [r for r in result["rows"] if r.get("status") == "ok" and r.get("cpu_ms_per_s")]
    written, skipped = [], []
    for name, fn in zip(PLOTS, (_latency_vs_accuracy, _cost_by_packet, _step_vs_window)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if fn(ax, ok):
            fig.tight_layout()
            path = out / name
            with writing_file(path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110)
            written.append(path)
        else:
            skipped.append(name)
        plt.close(fig)
    note = f"plots without data skipped: {', '.join(skipped)}." if skipped else ""
    return written, note


def _label(r: dict) -> str:
    return f"{r['model']} {r['mode']} {r['runtime']}/{r['precision']}"


def _latency_vs_accuracy(ax, rows) -> bool:
    pts = [r for r in rows if r.get("accuracy") is not None and r.get("batch") == 1]
    for r in pts:
        ax.scatter(r["cpu_ms_per_s"], 100 * r["accuracy"])
        ax.annotate(_label(r), (r["cpu_ms_per_s"], 100 * r["accuracy"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("CPU ms per second of audio (batch 1)")
    ax.set_ylabel("accuracy, % (streams: keyword detection; offline: top-1)")
    ax.set_title("cost vs accuracy")
    return bool(pts)


def _cost_by_packet(ax, rows) -> bool:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["runtime"] == "pymicro-wakeword":  # a peer: one line across, for reference
            ax.axhline(r["cpu_ms_per_s"], linestyle="--", color="grey", label=r["model"])
        elif r.get("batch") == 1 and r["mode"] != "offline" and r.get("packet_frames"):
            series.setdefault(_label(r), []).append((r["packet_frames"], r["cpu_ms_per_s"]))
    drawn = False
    for label, pts in sorted(series.items()):
        pts.sort()
        if len(pts) > 1:
            ax.plot([p for p, _ in pts], [c for _, c in pts], marker="o", label=label)
            drawn = True
    ax.set_yscale("log")
    ax.set_xlabel("frames per call (10 ms each)")
    ax.set_ylabel("CPU ms per second of audio")
    ax.set_title("cost per second of audio by packet size (batch 1)")
    if drawn:
        ax.legend(fontsize=6)
    return drawn


def _step_vs_window(ax, rows) -> bool:
    pairs: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r.get("batch") == 1 and r["mode"] in ("step", "windowed"):
            k = (r["model"], r["runtime"], r["precision"])
            prev = pairs.setdefault(k, {}).get(r["mode"])
            pairs[k][r["mode"]] = min(prev, r["cpu_ms_per_s"]) if prev else r["cpu_ms_per_s"]
    both = [(k, v) for k, v in sorted(pairs.items()) if len(v) == 2]
    for i, (k, v) in enumerate(both):
        ax.bar(i - 0.2, v["step"], 0.4, color="tab:blue", label="step" if i == 0 else None)
        ax.bar(i + 0.2, v["windowed"], 0.4, color="tab:orange", label="windowed" if i == 0 else None)
    ax.set_xticks(range(len(both)))
    ax.set_xticklabels([f"{m}\n{rt}/{p}" for (m, rt, p), _ in both], fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per second of audio (best packet)")
    ax.set_title("step form vs windowed recompute")
    if both:
        ax.legend(fontsize=7)
    return bool(both)
