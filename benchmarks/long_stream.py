"""Long live streams: N minutes of speech and noise through every exact step form with a demo
checkpoint, in torch and ONNX Runtime (fp32 and INT8), without a single reset.

    python benchmarks/long_stream.py [--minutes 60] [--models tcresnet8-causal,...] [--int8]
                                     [--out benchmarks/results/long_stream.md]

The recording (test clips of the embedded corpus, an unseen speaker, joined by 1-3 s of noise) is
generated block by block from a seed, so every source hears the same samples and nothing is held in
memory. Per source it reports: every state finite at every block, the largest |state| in the first
and in the last tenth of the stream (bounded: they stay alike), resident memory at the end of the
first and the last tenth (flat), the detections scored against the spoken keywords, and for ONNX
Runtime and INT8 how many of the torch stream's detections (the restart-free reference) they repeat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK_S = 10.0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def recording(minutes: float, seed: int = 0):
    """(blocks iterator factory, keyword events) of a speech+noise stream of `minutes`."""
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.data.prepared import load_labels

    corpus = demo_corpus_dir()
    ds, labels = KwsDataset(corpus, "test"), load_labels(corpus)
    total = int(minutes * 60 * 16000)
    plan, t = [], 0  # (gap samples, clip index)
    rng = np.random.default_rng(seed)
    while t < total:
        gap, i = int(rng.uniform(1.0, 3.0) * 16000), int(rng.integers(len(ds)))
        plan.append((gap, i))
        t += gap + 16000
    events, t = [], 0
    for gap, i in plan:
        t += gap
        lab = labels[int(ds[i][1])]
        if lab != "_silence_" and t + 16000 <= total:
            events.append((lab, t / 16000, (t + 16000) / 16000))
        t += 16000

    def blocks():
        noise_rng = np.random.default_rng(seed + 1)
        buf, done = [], 0
        size = int(BLOCK_S * 16000)
        for gap, i in plan:
            buf.append((0.01 * noise_rng.standard_normal(gap)).astype(np.float32))
            buf.append(np.asarray(ds[i][0], dtype=np.float32))
            while sum(len(b) for b in buf) >= size:
                x = np.concatenate(buf)
                out, rest = x[:size], x[size:]
                buf = [rest]
                n = min(size, total - done)
                if n <= 0:
                    return
                yield out[:n]
                done += n
        if buf and done < total:
            yield np.concatenate(buf)[: total - done]

    return blocks, events


def run_source(name: str, feeder, state_of, labels, hop_s: float, blocks, minutes: float) -> dict:
    from kwsdeploy.contract import DEFAULT_DETECTION
    from kwsdeploy.runtime.detect import KeywordDetector

    det = KeywordDetector.from_settings(labels, hop_s, DEFAULT_DETECTION)
    n_blocks = int(np.ceil(minutes * 60 / BLOCK_S))
    tenth = max(1, n_blocks // 10)
    first_max = last_max = 0.0
    rss_first = rss_last = None
    finite = True
    found = []
    t0 = time.perf_counter()
    for k, block in enumerate(blocks()):
        logits = feeder.feed(block)
        if len(logits):
            found += det.update(logits)
        states = state_of()
        finite &= all(np.isfinite(s).all() for s in states)
        m = max(float(np.abs(s).max()) for s in states) if states else 0.0
        if k < n_blocks // 2:
            first_max = max(first_max, m)
        else:
            last_max = max(last_max, m)
        if k < tenth:
            rss_first = rss_mib()
        if k >= n_blocks - tenth:
            rss_last = rss_mib()
    return {"source": name, "seconds": time.perf_counter() - t0, "finite": bool(finite), "state_max_first": first_max,
            "state_max_last": last_max, "rss_first_mib": rss_first, "rss_last_mib": rss_last,
            "detections": [(e.label, round(e.time, 3)) for e in found]}


def score(found, events, minutes):
    from kwsdeploy.streaming.stream_eval import Event, score_detections

    return score_detections(found, [Event(*e) for e in events], minutes * 60).to_dict()


def agreement(ref, other, tol: float = 0.5) -> float:
    """Share of the reference's detections that `other` repeats (same label within tol seconds)."""
    if not ref:
        return 1.0
    hit = sum(any(lab == l2 and abs(t - t2) <= tol for l2, t2 in other) for lab, t in ref)
    return hit / len(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--models", default="tcresnet8-causal,bcresnet1-causal,matchboxnet-causal,kwm-causal-64-4")
    ap.add_argument("--int8", action="store_true", help="also export and stream the INT8 (cpu recipe) graph")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "long_stream.md")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from kwsdeploy.cli.stream import TorchSource
    from kwsdeploy.runtime.runners import open_runner
    from kwsdeploy.streaming.blocks import RunnerFeeder

    blocks, events = recording(args.minutes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            src = TorchSource(None, model, None, None)
            feeder = src.feeder()
            torch_row = run_source(f"{model} torch", feeder, lambda: [s.numpy() for s in feeder.pipe.state],
                                   src.labels, src.hop_seconds, blocks, args.minutes)
            rows.append(torch_row)
            write_report(args, rows, events)
            print(json.dumps({k: v for k, v in torch_row.items() if k != "detections"}), flush=True)
            bundle = Path(tmp) / model
            cmd = [sys.executable, "-m", "kwsdeploy", "export", "--model", model, "--frontend", "--exporter", "legacy",
                   "--out", str(bundle)] + (["--int8", "--target", "cpu"] if args.int8 else [])
            subprocess.run(cmd, check=True, capture_output=True)
            for precision in ("fp32",) + (("int8-cpu",) if args.int8 else ()):
                runner = open_runner(bundle, precision=precision, threads=1)
                rf = RunnerFeeder(runner)
                row = run_source(f"{model} onnxruntime {precision}", rf, lambda: list(runner.state().values()),
                                 runner.labels, runner.spec.hop_seconds, blocks, args.minutes)
                row["agrees_with_torch"] = agreement(torch_row["detections"], row["detections"])
                rows.append(row)
                write_report(args, rows, events)
                print(json.dumps({k: v for k, v in row.items() if k != "detections"}), flush=True)
    write_report(args, rows, events)


def write_report(args, rows, events) -> None:
    """The results table (rewritten after every source, so a long run leaves what it measured)."""
    lines = [f"# {args.minutes:g} minutes of speech and noise, no reset", "",
             f"`python benchmarks/long_stream.py --minutes {args.minutes:g} --models {args.models}"
             f"{' --int8' if args.int8 else ''}`: test clips of the embedded corpus (unseen speaker) joined by 1-3 s",
             "of noise, streamed in 10 s blocks; one CPU thread. |state| max over the first and the second half;",
             "RSS at the end of the first and the last tenth; 'agrees' = share of the torch stream's detections",
             "(the restart-free reference) repeated within 0.5 s.", "",
             "| source | finite | max abs state 1st / 2nd half | RSS MiB first / last | keywords | accuracy | FA / hour | agrees with torch | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = score(r["detections"], events, args.minutes)
        lines.append(f"| {r['source']} | {'yes' if r['finite'] else 'NO'} | {r['state_max_first']:.3g} / "
                     f"{r['state_max_last']:.3g} | {r['rss_first_mib']:.0f} / {r['rss_last_mib']:.0f} | "
                     f"{s['keyword_events']} | {s['accuracy']:.1%} | {s['false_alarms_per_hour']:.1f} | "
                     f"{r.get('agrees_with_torch', 1.0):.1%} | {r['seconds']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
