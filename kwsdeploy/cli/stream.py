"""`kwsdeploy stream` (keyword events in a recording) and `kwsdeploy eval-stream` (accuracy and false
alarms per hour on a long recording made of test clips joined by noise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from kwsdeploy.cli.common import user_errors
from kwsdeploy.contract import DEFAULT_DETECTION, samples_to_seconds
from kwsdeploy.sources import (  # noqa: F401  (the library behind these commands; tests import it here)
    BundleSource,
    Source,
    TorchSource,
    detect,
    detect_blocks,
    resolve_settings,
)

# Detection defaults shared by `stream`, `eval-stream` and `demo` (kwsdeploy.contract.DetectionSettings; a
# bundle tuned by `kwsdeploy tune` carries its own).
THRESHOLD = DEFAULT_DETECTION.threshold
SMOOTHING_S = DEFAULT_DETECTION.smoothing_seconds
REFRACTORY_S = DEFAULT_DETECTION.refractory_seconds
MIN_GAP_S = DEFAULT_DETECTION.min_gap_seconds


def _source(checkpoint, bundle, model, mode, hop_frames, backend: str = "auto") -> Source:
    """The one source the options name: a bundle, else a checkpoint (or a model's demo checkpoint)."""
    from kwsdeploy.cli._options import check_bundle_fixed, check_source

    check_source(checkpoint, bundle, model)
    if bundle is not None:
        src = BundleSource(bundle, backend)
        check_bundle_fixed(src.spec, mode, hop_frames)
        return src
    return TorchSource(checkpoint, model, mode, hop_frames)


PROGRESS_AFTER_S = 30.0  # a progress bar (on a terminal) for recordings longer than this


def _progress(reader, enabled: bool):
    """Wrap a BlockReader's blocks in a rich progress bar on stderr when it is long and stderr a terminal."""
    import sys

    if not enabled or reader.seconds is None or reader.seconds < PROGRESS_AFTER_S or not sys.stderr.isatty():
        yield from reader
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TimeRemainingColumn

    with Progress("streaming", BarColumn(), "{task.completed:.0f}/{task.total:.0f} s", TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("stream", total=reader.seconds)
        for block in reader:
            yield block
            bar.update(task, completed=reader.samples / reader.sample_rate)


def register(app: typer.Typer) -> None:
    """Add `stream` and `eval-stream` to the CLI."""
    from kwsdeploy.cli import _options as opt

    det = opt.detector_options(THRESHOLD, SMOOTHING_S, REFRACTORY_S, MIN_GAP_S)

    @app.command("stream")
    def stream_cmd(
        wav: Path = typer.Argument(..., help="Recording to listen to (any rate; stereo is averaged), read in blocks; "
                                               "'-' reads raw 16-bit PCM from stdin (e.g. a microphone pipe)."),
        checkpoint: Optional[Path] = opt.CHECKPOINT,
        bundle: Optional[Path] = opt.BUNDLE,
        model: Optional[str] = opt.MODEL,
        backend: str = opt.BACKEND,
        mode: Optional[str] = opt.MODE,
        hop_frames: Optional[int] = opt.PACKET_FRAMES,
        threshold: Optional[float] = det["threshold"],
        smoothing: Optional[float] = det["smoothing"],
        refractory: Optional[float] = det["refractory"],
        min_gap: Optional[float] = det["min_gap"],
        temperature: Optional[float] = det["temperature"],
        rate: Optional[int] = typer.Option(None, "--rate", min=1, max=384_000,
                                           help="With '-': the PCM sample rate (default: the model's, 16000)."),
        channels: int = typer.Option(1, "--channels", min=1, max=32, help="With '-': interleaved channels (averaged)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output (with '-': one JSON line per event)."),
    ) -> None:
        """Keyword events (label, time, score) in a recording, streamed packet by packet ('-': raw PCM from stdin)."""
        from kwsdeploy.audio import read_blocks, read_pcm_blocks

        with user_errors():
            src = _source(checkpoint, bundle, model, mode, hop_frames, backend)
            rate_out = src.spec.feature_config.sample_rate
            live = str(wav) == "-"
            if live:
                import sys

                reader = read_pcm_blocks(sys.stdin.buffer, rate or rate_out, channels, rate_out)
            else:
                reader = read_blocks(wav, rate_out)
            settings = resolve_settings(src, threshold, smoothing, refractory, min_gap, temperature)
            events = []
            for e in detect_blocks(src, _progress(reader, not live), settings=settings):
                if live:  # a pipe never ends by itself: say each event as it fires
                    typer.echo(json.dumps(e.to_dict()) if as_json else f"  {e.time:8.2f} s  {e.label:<12} p={e.score:.2f}")
                events.append(e)
        if live:
            return
        seconds = samples_to_seconds(reader.samples, src.spec.feature_config)
        if as_json:
            typer.echo(json.dumps({
                "file": str(wav), "source": src.describe, "seconds": seconds,
                "detection": settings.to_dict(),
                "notes": [n for n in (src.note, *reader.notes) if n], "detections": [e.to_dict() for e in events],
            }, indent=1))
            return
        for note in (src.note, *reader.notes):
            if note:
                typer.echo(f"note: {note}", err=True)
        typer.echo(f"{wav.name}: {seconds:.2f} s through {src.describe}, "
                   f"hop {src.hop_seconds * 1000:.0f} ms, threshold {settings.threshold:g}"
                   + (" (tuned, from the manifest)" if settings.tuned else ""))
        for e in events:
            typer.echo(f"  {e.time:8.2f} s  {e.label:<12} p={e.score:.2f}")
        if not events:
            typer.echo("  no keyword detected")

    @app.command("eval-stream")
    def eval_stream_cmd(
        checkpoint: Optional[Path] = opt.CHECKPOINT,
        bundle: Optional[Path] = opt.BUNDLE,
        model: Optional[str] = opt.MODEL,
        backend: str = opt.BACKEND,
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared directory (default: the demo corpus)."),
        split: str = typer.Option("test", "--split"),
        modes: str = typer.Option("card", "--modes", help="Comma list of exact,windowed (torch sources); 'card' = the card's mode."),
        hop_frames: Optional[int] = opt.PACKET_FRAMES,
        clips: int = typer.Option(0, "--clips", min=0, help="Clips to join (0 = the whole split)."),
        threshold: Optional[float] = det["threshold"],
        smoothing: Optional[float] = det["smoothing"],
        refractory: Optional[float] = det["refractory"],
        min_gap: Optional[float] = det["min_gap"],
        temperature: Optional[float] = det["temperature"],
        seed: int = typer.Option(0, "--seed", min=0),
        recording: str = typer.Option(
            "clips", "--recording", help="clips (test clips joined by noise gaps) or a comma list of keywords "
            "(the split's keywords between held-out synthetic speech and noise parts) and digits (the split's "
            "digits with 0.5 s pauses): these two report the DET curve."),
        speech_set: str = typer.Option("test", "--speech-set", help="Held-out TTS half for --recording keywords: test | tune."),
        speech_minutes: float = typer.Option(32.0, "--speech-minutes", callback=opt.finite(0.0, 600.0, lo_open=True),
                                             help="Minutes of non-keyword speech (keywords recording)."),
        target: Optional[float] = typer.Option(None, "--target-fa-per-hour", callback=opt.finite(0.0),
                                               help="Report the threshold meeting this budget."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write det.json (and det-<recording>.png with matplotlib) here."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Detection on a long recording: accuracy and false alarms per hour, or (keywords, digits) the DET curve."""
        if recording != "clips":
            from kwsdeploy.cli._detection import eval_detection_cmd

            with user_errors():
                src = _source(checkpoint, bundle, model, None if modes == "card" else modes, hop_frames, backend)
                settings = resolve_settings(src, threshold, smoothing, refractory, min_gap, temperature)
                result = eval_detection_cmd(src, settings, recording, data, split, speech_set, speech_minutes,
                                            seed, target, out)
            if as_json:
                typer.echo(json.dumps(result, indent=1))
            return
        with user_errors():
            rows = evaluate_stream(checkpoint, bundle, model, data, split, modes, hop_frames, clips,
                                   threshold, smoothing, refractory, seed, backend=backend, min_gap=min_gap,
                                   temperature=temperature)
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        from rich.table import Table

        from kwsdeploy.cli.common import console

        table = Table(title="continuous-stream evaluation")
        for col in ("source", "minutes", "keywords", "accuracy", "missed", "confused", "false alarms", "FA / hour"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["source"], f"{r['hours'] * 60:.1f}", str(r["keyword_events"]), f"{r['accuracy']:.1%}",
                          str(r["missed"]), str(r["confused"]), str(r["false_alarms"]), f"{r['false_alarms_per_hour']:.1f}")
        console().print(table)


def evaluate_stream(checkpoint, bundle, model, data, split, modes, hop_frames, clips, threshold, smoothing,
                    refractory, seed, backend: str = "auto", min_gap=None, temperature=None) -> list[dict]:
    """Build the long recording once and score every requested source/mode on it."""
    from kwsdeploy.cli._options import check_source

    check_source(checkpoint, bundle, model)  # before the recording is built
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.noise import background_noise
    from kwsdeploy.data.prepared import load_labels
    from kwsdeploy.streaming.stream_eval import build_long_recording, score_detections

    if data is None:
        from kwsdeploy.data.demo import demo_corpus_dir

        data = demo_corpus_dir()
    ds = KwsDataset(data, split)
    labels = load_labels(data)
    n = len(ds) if clips <= 0 else min(clips, len(ds))
    order = np.random.default_rng(seed).permutation(len(ds))[:n]
    pairs = []
    for i in order:
        wave, y = ds[int(i)]
        pairs.append((np.asarray(wave, dtype=np.float32), labels[int(y)]))
    noise = background_noise(Path(data))
    audio, events = build_long_recording(pairs, noise=noise, seed=seed)
    sources = []
    if bundle is not None:
        if modes != "card":
            from kwsdeploy.cli._options import ContradictionError

            raise ContradictionError(f"--modes {modes} applies to torch sources; a bundle streams in the mode it "
                                     "was exported in: drop --modes.")
        sources.append(_source(None, bundle, None, None, hop_frames, backend))
    else:
        for mode in (None,) if modes == "card" else [m.strip() for m in modes.split(",")]:
            sources.append(_source(checkpoint, None, model, mode, hop_frames))
    rows = []
    for src in sources:
        settings = resolve_settings(src, threshold, smoothing, refractory, min_gap, temperature)
        events_found = detect(src, audio, 0, 0, 0, settings=settings)
        score = score_detections([(e.label, e.time) for e in events_found], events, samples_to_seconds(len(audio)))
        rows.append({"source": src.describe, "hop_ms": round(src.hop_seconds * 1000, 3), **score.to_dict()})
    return rows
