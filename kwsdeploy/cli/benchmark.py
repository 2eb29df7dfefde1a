"""`kwsdeploy benchmark`: one row per model x runtime x precision x mode x packet x batch (kwsdeploy.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_OUT = Path("benchmark-results")


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _models(text: str) -> list[str]:
    from kwsdeploy.models.registry import get_card, list_cards

    out: list[str] = []
    for name in _list(text):
        if name == "all":
            out += [c.name for c in list_cards()]
        elif name == "exact":
            out += [c.name for c in list_cards() if c.streaming == "exact"]
        else:
            out.append(get_card(name).name)  # UnknownModelError names the nearest one
    return out


def _ints(text: str, option: str, allow_natural: bool = False) -> list:
    out: list = []
    for t in _list(text):
        if allow_natural and t == "natural":
            out.append(None)
            continue
        try:
            v = int(t)
        except ValueError:
            raise ValueError(f"{option} takes comma-separated integers{' or natural' if allow_natural else ''}, got {t!r}.") from None
        if v < 1:
            raise ValueError(f"{option} values must be >= 1, got {v}.")
        out.append(v)
    if not out:
        raise ValueError(f"{option} needs at least one value.")
    return out


def settings_from_options(**o) -> "object":
    """Validate the options into kwsdeploy.bench.run.Settings (ValueError: one line for the user)."""
    from kwsdeploy.bench import backends, subjects
    from kwsdeploy.bench.run import Settings

    modes = _list(o["modes"])
    bad = [m for m in modes if m not in subjects.MODES]
    if bad or not modes:
        raise ValueError(f"--modes takes {', '.join(subjects.MODES)}; got {o['modes']!r}.")
    runtimes, precisions = _list(o["runtimes"]), _list(o["precisions"])
    backends.expand(runtimes, precisions)  # unknown names -> ValueError
    if o["device"] not in ("cpu", "cuda"):
        raise ValueError(f"--device is cpu or cuda, got {o['device']!r}.")
    if o["threads"] < 1 or o["calls"] < 1 or o["warmup"] < 0 or o["rounds"] < 1:
        raise ValueError("--threads, --calls and --rounds must be >= 1, --warmup >= 0.")
    if o["data"] is not None and not Path(o["data"]).is_dir():
        raise ValueError(f"--data {o['data']} is not a directory; pass a prepared corpus (kwsdeploy data prepare-...).")
    return Settings(models=_models(o["models"]), runtimes=runtimes, precisions=precisions, modes=modes,
                    packet_frames=_ints(o["packet_frames"], "--packet-frames", allow_natural=True),
                    batches=_ints(o["batch"], "--batch"), frontend=o["frontend"], device=o["device"],
                    threads=o["threads"], calls=o["calls"], warmup=o["warmup"], max_seconds=o["max_seconds"],
                    rounds=o["rounds"],
                    audio_seconds=o["audio_seconds"], exporter=o["exporter"], data=o["data"],
                    data_clips=o["data_clips"], peers=o["peers"])


def register(app: typer.Typer) -> None:
    """Add `benchmark` to the CLI."""

    @app.command("benchmark")
    def benchmark_cmd(
        models: str = typer.Option("tcresnet8-causal,kwm", "--models", help="Comma list of registry names, 'exact' or 'all'."),
        runtimes: str = typer.Option("torch,ort,ort-int8,tensorrt", "--runtimes", help="torch, ort, ort-int8, tensorrt."),
        precisions: str = typer.Option("fp32", "--precisions", help="fp32, fp16, int8 (per runtime)."),
        modes: str = typer.Option("step", "--modes", help="step, windowed, offline."),
        frontend: bool = typer.Option(False, "--frontend", help="MFCC frontend inside the graph (audio in)."),
        packet_frames: str = typer.Option("natural", "--packet-frames", help="Frames per call, comma list ('natural': the step form's own; windowed: 10)."),
        batch: str = typer.Option("1", "--batch", help="Streams per call, comma list (e.g. 1,64)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        threads: int = typer.Option(1, "--threads", help="Intra-op threads (torch and ONNX Runtime)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared corpus: accuracy and false alarms per hour per row."),
        data_clips: int = typer.Option(20, "--data-clips", help="Test clips joined into the scored recording."),
        calls: int = typer.Option(300, "--calls", help="Timed calls per row at most."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed calls before timing."),
        max_seconds: float = typer.Option(1.0, "--max-seconds", help="Stop timing a row after this long in all."),
        rounds: int = typer.Option(5, "--rounds", help="Interleaved timing rounds over all rows (load falls on all alike)."),
        audio_seconds: float = typer.Option(10.0, "--audio-seconds", help="Seconds of the shared input audio."),
        exporter: str = typer.Option("legacy", "--exporter", help="torch.onnx path: legacy (fast), dynamo or auto."),
        peers: bool = typer.Option(True, "--peers/--no-peers", help="Add microWakeWord rows when pymicro-wakeword is installed."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Output folder (benchmark.md/.json/.csv and PNG plots)."),
        debug: bool = typer.Option(False, "--debug", help="Tracebacks for errors."),
    ) -> None:
        """Latency, CPU per second of audio, streams per core, size, accuracy and the physical bound, per row."""
        from kwsdeploy.models.registry import UnknownModelError

        opts = dict(models=models, runtimes=runtimes, precisions=precisions, modes=modes, frontend=frontend,
                    packet_frames=packet_frames, batch=batch, device=device, threads=threads, data=data,
                    data_clips=data_clips, calls=calls, warmup=warmup, max_seconds=max_seconds, rounds=rounds,
                    audio_seconds=audio_seconds, exporter=exporter, peers=peers)
        try:
            settings = settings_from_options(**opts)
            from kwsdeploy.bench.report import check_out

            check_out(out)  # before any timing: a same-named file that is not ours is refused
        except (ValueError, UnknownModelError) as exc:
            if debug:
                raise
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        _run(settings, out)


def _run(settings, out: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kwsdeploy.bench import report
    from kwsdeploy.bench.run import run

    with Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("measuring the machine", total=None)

        def progress(i: int, total: int, what: str) -> None:
            bar.update(task, total=total, completed=i, description=what)

        result = run(settings, progress).to_dict()
    paths = report.write(result, out)
    ok = sum(r.get("status") == "ok" for r in result["rows"])
    typer.echo(f"{ok} of {len(result['rows'])} rows ran; wrote {', '.join(p.name for p in paths)} to {out}")
    for r in result["rows"]:
        if r.get("status") == "ok":
            typer.echo(f"  {r['model']:<22} {r['mode']:<8} p{r['packet_frames']!s:<3} {r['runtime']:<8} {r['precision']:<4} "
                       f"b{r['batch']:<3} p50 {r['p50_us']:9.1f} us  {r['cpu_ms_per_s']:8.3f} CPU ms/s")
        else:
            typer.echo(f"  {r['model']:<22} {r['mode']:<8} {r['runtime']:<8} {r['precision']:<4} {r['status']}: {r['reason']}")
    for n in result["notes"]:
        typer.echo(f"note: {n}")
