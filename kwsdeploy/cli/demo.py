"""`kwsdeploy demo`: the whole pipeline on the embedded real-speech corpus, offline, in minutes.

For every shipped demo checkpoint: accuracy on the corpus's unseen test speaker, export of the
step form (MFCC frontend inside the graph) to a verified ONNX bundle, then a long recording of
test clips joined by noise streamed through the torch-free ONNX Runtime runner, with keyword
events scored against where the words really are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.atomic import check_report_file, json_report, write_report


def _is_demo_summary(d) -> bool:
    """A summary.json of ours: a list of per-model rows with the fields run_demo writes."""
    keys = ("model", "stream_accuracy", "onnx_nodes")
    return isinstance(d, list) and bool(d) and all(isinstance(r, dict) and all(k in r for k in keys) for r in d)


DEMO_SUMMARY = json_report("demo summary (summary.json)", _is_demo_summary)


def shipped_demo_models() -> list[str]:
    """Registry names that ship a demo checkpoint, in registry order."""
    from kwsdeploy.models.registry import list_cards
    from kwsdeploy.train.checkpoint import CheckpointError, demo_checkpoint_path

    names = []
    for card in list_cards():
        try:
            demo_checkpoint_path(card.name)
        except CheckpointError:
            continue
        names.append(card.name)
    return names


def run_demo(out: Path, models: list[str], clips: int, con, exporter: str = "legacy") -> list[dict]:
    """Evaluate, export, verify and stream each model; returns one summary row per model."""
    import numpy as np

    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.data.prepared import load_labels
    from kwsdeploy.contract import DEFAULT_DETECTION, samples_to_seconds
    from kwsdeploy.data.noise import background_noise
    from kwsdeploy.exporters.bundle import export_bundle
    from kwsdeploy.exporters.inputs import parity_clips
    from kwsdeploy.models.registry import count_params
    from kwsdeploy.runtime.verify import verify_bundle
    from kwsdeploy.sources import BundleSource, detect
    from kwsdeploy.streaming.stream_eval import build_long_recording, score_detections
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint
    from kwsdeploy.train.evaluate import evaluate_dataset, in_model_labels

    corpus = demo_corpus_dir()
    test = KwsDataset(corpus, "test")
    labels = load_labels(corpus)
    order = np.random.default_rng(0).permutation(len(test))[: clips or len(test)]
    pairs = [(np.asarray(test[int(i)][0], dtype=np.float32), labels[int(test[int(i)][1])]) for i in order]
    recording, events = build_long_recording(pairs, noise=background_noise(corpus), seed=0)
    recording_s = samples_to_seconds(len(recording))  # the corpus and the long recording are 16 kHz
    con.print(f"demo corpus: {corpus.name} ({len(test)} test clips of a speaker no training step saw); "
              f"stream: {recording_s:.0f} s of {len(pairs)} test clips joined by noise gaps")
    rows = []
    for name in models:
        t0 = time.perf_counter()
        ck = load_checkpoint(demo_checkpoint_path(name))
        metrics = evaluate_dataset(ck.model, ck.feature_config, in_model_labels(test, labels, ck.labels), ck.labels)
        con.print(f"\n[bold]{name}[/bold]: {count_params(ck.model):,} parameters, test accuracy "
                  f"{metrics['accuracy']:.1%} (macro F1 {metrics['macro_f1']:.3f})")
        result = export_bundle(
            out / "bundles" / name, overwrite=True, model=ck.model, labels=ck.labels,
            feature_config=ck.feature_config, parity=parity_clips(ck.feature_config), modes=("step",),
            frontend=True, checkpoint={"source": "demo", "weights_sha256": ck.card.get("weights_sha256", "")},
            accuracy={"test_accuracy": metrics["accuracy"], "test_split": "demo corpus test (unseen speaker)"},
            exporter=exporter,
        )
        row = result.rows[0]
        verify_bundle(result.path)  # raises on the first failed check
        con.print(f"  exported {result.path}/{row.file}: {row.size_bytes / 1024:.0f} KiB, {row.nodes} nodes, "
                  f"parity max|d| {row.parity_max_abs:.1e}; verified (schema, hashes, golden parity)")
        src = BundleSource(result.path)
        t1 = time.perf_counter()
        found = detect(src, recording, 0, 0, 0, settings=DEFAULT_DETECTION)
        stream_s = time.perf_counter() - t1
        score = score_detections([(e.label, e.time) for e in found], events, recording_s)
        shown = ", ".join(f"{e.label}@{e.time:.1f}s" for e in found[:6])
        truth = ", ".join(f"{e.label}@{e.start:.1f}s" for e in events[:6])
        con.print(f"  streamed through ONNX Runtime ({src.hop_seconds * 1000:.0f} ms hop, "
                  f"{stream_s / recording_s * 1000:.2f} ms compute per s of audio)")
        con.print(f"  heard: {shown} ...\n  truth: {truth} ...")
        rows.append({
            "model": name, "params": count_params(ck.model), "test_accuracy": metrics["accuracy"],
            "stream_accuracy": score.accuracy, "false_alarms_per_hour": score.false_alarms_per_hour,
            "onnx_nodes": row.nodes, "onnx_kib": row.size_bytes / 1024, "parity_max_abs": row.parity_max_abs,
            "hop_ms": src.hop_seconds * 1000, "rtf": stream_s / recording_s,
            "seconds": time.perf_counter() - t0,
        })
    return rows


def register(app: typer.Typer) -> None:
    """Add `demo` to the CLI."""
    from kwsdeploy.cli import _options as opt

    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("kwsdeploy-demo"), "--out", "-o", help="Where bundles and the summary go."),
        models: Optional[str] = typer.Option(None, "--models", help="Comma list (default: every shipped demo checkpoint)."),
        clips: int = typer.Option(40, "--clips", min=0, help="Test clips in the streamed recording (0 = all)."),
        exporter: str = opt.exporter_option(
            "legacy", "torch.onnx path: legacy (fast; the smaller graph for most demo models), dynamo, or auto "
                      "(both, keep the smaller)."),
    ) -> None:
        """Run the whole pipeline on the embedded corpus: evaluate, export, verify, stream."""
        from rich.table import Table

        from kwsdeploy.cli.common import console, user_errors
        from kwsdeploy.models.registry import get_card, list_cards

        con = console()
        con.width = max(con.width, 130)
        cards = list_cards()
        con.print(f"kwsdeploy zoo: {len(cards)} models in {len({c.family for c in cards})} families "
                  f"({sum(c.streaming == 'exact' for c in cards)} with an exact step form); 'kwsdeploy models' lists them")
        with user_errors():
            names = [get_card(m.strip()).name for m in models.split(",")] if models else shipped_demo_models()
            if not names:
                raise ValueError("No demo checkpoint is shipped with this install; train one with 'kwsdeploy train --preset demo'.")
            check_report_file(out / "summary.json", DEMO_SUMMARY)  # before any work: a file that is not ours is refused
            rows = run_demo(out, names, clips, con, exporter)
        table = Table(title="kwsdeploy demo: real speech, unseen speaker, step form through ONNX Runtime")
        for col in ("model", "params", "test acc", "stream acc", "FA / h", "hop", "nodes", "KiB", "parity", "RTF"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            table.add_row(r["model"], f"{r['params']:,}", f"{r['test_accuracy']:.1%}", f"{r['stream_accuracy']:.1%}",
                          f"{r['false_alarms_per_hour']:.0f}", f"{r['hop_ms']:.0f} ms", str(r["onnx_nodes"]),
                          f"{r['onnx_kib']:.0f}", f"{r['parity_max_abs']:.0e}", f"{r['rtf']:.4f}")
        con.print(table)
        with user_errors():
            write_report(out / "summary.json", json.dumps(rows, indent=1) + "\n", DEMO_SUMMARY)  # temp + rename
        con.print(f"summary: {out / 'summary.json'}; bundles: {out / 'bundles'}")
