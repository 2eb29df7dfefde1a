"""Option groups shared by several commands, declared once with their ranges, and the checks of
contradictory combinations (refused with one line, never silently resolved).

Numbers are checked where they enter: integers by typer ranges, floats by `finite` (a range
alone lets `nan` through). A refused value is a usage error (exit 2) naming the option.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable, Optional

import typer

MAX_PACKET_FRAMES = 100  # 1 s of 10 ms frames: a longer step call only adds latency
MAX_THREADS = 256
MAX_SMOOTHING_S = 10.0
MAX_TEMPERATURE = 100.0  # --temperature's upper bound (1: plain softmax)
MAX_REFRACTORY_S = 60.0
MAX_ENGINE_BATCH = 65536  # the exporters' largest batch (the dynamic axis' upper bound)
MAX_WORKSPACE_MB = 1 << 20  # 1 TiB: more than any device has; a larger value is a typo
EXPORTERS = ("auto", "dynamo", "legacy")
STREAM_MODES = ("exact", "windowed")


def finite(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[Optional[float]], Optional[float]]:
    """A typer callback refusing nan/inf and values outside [lo, hi] (open ends where asked)."""

    def check(value: Optional[float]) -> Optional[float]:
        if value is None:
            return value
        want = (f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
                f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open else ']'}")
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number; give one in {want}.")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise typer.BadParameter(f"{value:g} is out of range; give a number in {want}.")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise typer.BadParameter(f"{value:g} is out of range; give a number in {want}.")
        return value

    return check


def float_list(text: str) -> list[float]:
    """'0.8,1.25' -> [0.8, 1.25]; [] when any part is not a number (the caller names the option)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        return []


def choice(*allowed: str) -> Callable[[Optional[str]], Optional[str]]:
    """A typer callback refusing a string outside `allowed` (None passes)."""

    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}.")
        return value

    return check


OptionGroup = dict[str, tuple[Any, typer.models.OptionInfo]]  # parameter name -> (type, typer.Option)


def with_options(*groups: OptionGroup) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command written as `def cmd(**o)` the options of `groups`, in order, as keyword
    parameters of its signature (where typer reads them): a long option list lives in named groups."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind)
                  for group in groups for name, (kind, info) in group.items()]
        fn.__signature__ = inspect.Signature(params, return_annotation=None)
        fn.__annotations__ = {**{p.name: p.annotation for p in params}, "return": None}
        return fn

    return apply


# -- the source of a model: a checkpoint, a bundle, or a registry name's demo checkpoint -----------
CHECKPOINT = typer.Option(None, "--checkpoint", help="kwsdeploy checkpoint (torch step form).")
BUNDLE = typer.Option(None, "--bundle", help="Exported bundle directory (ONNX Runtime, torch-free runner).")
MODEL = typer.Option(None, "--model", "-m", help="Registry name: use its shipped demo checkpoint.")
BACKEND = typer.Option("auto", "--backend", callback=choice("auto", "onnxruntime", "tensorrt"),
                       help="Bundle runner: auto (TensorRT when installed and the bundle has its engine, else "
                            "ONNX Runtime), onnxruntime or tensorrt.")
MODE = typer.Option(None, "--mode", callback=choice(*STREAM_MODES),
                    help="exact | windowed (default: the model card's; a bundle's is fixed at export).")

PACKET_HELP = ("Frames per step call: windowed hop (default 10) or a multiple of an exact step form's "
               f"natural packet (default: natural); 1..{MAX_PACKET_FRAMES}.")
PACKET_FRAMES = typer.Option(None, "--packet-frames", "--hop-frames", min=1, max=MAX_PACKET_FRAMES, help=PACKET_HELP)


def exporter_option(default: str, help: str = "torch.onnx path: auto (both, keep the smaller graph), dynamo or "
                                              "legacy.") -> typer.models.OptionInfo:
    """--exporter with its choices (the default differs: export tries both, the demo the legacy path)."""
    return typer.Option(default, "--exporter", callback=choice(*EXPORTERS), help=help)


def engine_batch_options() -> dict[str, typer.models.OptionInfo]:
    """--max-batch and --opt-batch of a TensorRT engine, each 1..MAX_ENGINE_BATCH (opt <= max is the plan's check)."""
    return {
        "max_batch": typer.Option(1, "--max-batch", min=1, max=MAX_ENGINE_BATCH,
                                  help=f"Largest batch (independent streams) the engine takes; 1..{MAX_ENGINE_BATCH}."),
        "opt_batch": typer.Option(None, "--opt-batch", min=1, max=MAX_ENGINE_BATCH,
                                  help="Batch TensorRT tunes for (default 1); 1..--max-batch."),
    }


def workspace_option(default_mb: int) -> typer.models.OptionInfo:
    """--workspace, the TensorRT builder's workspace limit in MB, 1..MAX_WORKSPACE_MB."""
    return typer.Option(default_mb, "--workspace", min=1, max=MAX_WORKSPACE_MB,
                        help=f"Builder workspace limit, MB; 1..{MAX_WORKSPACE_MB}.")


THREADS = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads (default: the library's).")


def detector_options(threshold: float, smoothing: float, refractory: float,
                     min_gap: float) -> dict[str, typer.models.OptionInfo]:
    """--threshold (0, 1], --smoothing [0, 10] s, --refractory and --min-gap [0, 60] s, --temperature (0, 100].
    Their defaults are None (the bundle manifest's settings, else the given defaults, which the help names)."""
    return {
        "threshold": typer.Option(None, "--threshold", callback=finite(0.0, 1.0, lo_open=True),
                                  help=f"Smoothed probability that fires an event, in (0, 1] (default: the "
                                       f"bundle's, else {threshold:g})."),
        "smoothing": typer.Option(None, "--smoothing", callback=finite(0.0, MAX_SMOOTHING_S),
                                  help=f"Posterior smoothing window, seconds (default: the bundle's, else {smoothing:g})."),
        "refractory": typer.Option(None, "--refractory", callback=finite(0.0, MAX_REFRACTORY_S),
                                   help=f"Seconds after a keyword's event in which that keyword does not fire again "
                                        f"(default: the bundle's, else {refractory:g})."),
        "min_gap": typer.Option(None, "--min-gap", callback=finite(0.0, MAX_REFRACTORY_S),
                                help=f"Seconds after any event in which no keyword fires (default: the bundle's, "
                                     f"else {min_gap:g})."),
        "temperature": typer.Option(None, "--temperature", callback=finite(0.0, MAX_TEMPERATURE, lo_open=True),
                                    help="Softmax temperature before smoothing; below 1 sharpens (default: the "
                                         "bundle's, else 1)."),
    }


# -- contradictions -------------------------------------------------------------------------------
class ContradictionError(ValueError):
    """Two options that cannot both hold."""


def check_source(checkpoint: Optional[Path], bundle: Optional[Path], model: Optional[str],
                 mode: Optional[str] = None) -> None:
    """Exactly one source; a bundle takes no --mode (fixed at export, checked against it on load)."""
    given = [n for n, v in (("--checkpoint", checkpoint), ("--bundle", bundle), ("--model", model)) if v is not None]
    if len(given) > 1:
        raise ContradictionError(f"{' and '.join(given)} name different sources (--model NAME means its shipped "
                                 "demo checkpoint): pass one.")
    if not given:
        raise ContradictionError("Give --checkpoint CKPT, --bundle DIR or --model NAME (uses its shipped demo checkpoint).")


def check_bundle_fixed(spec, mode: Optional[str], packet_frames: Optional[int]) -> None:
    """A bundle streams as it was exported: a different --mode or --packet-frames is refused."""
    if mode is not None and mode != spec.mode:
        raise ContradictionError(f"--mode {mode} but the bundle streams in {spec.mode} mode (fixed at export): "
                                 "drop --mode, or export a bundle in that mode.")
    if packet_frames is not None and packet_frames != spec.packet_frames:
        raise ContradictionError(f"--packet-frames {packet_frames} but the bundle was exported with "
                                 f"{spec.packet_frames} (fixed at export): drop it, or export with "
                                 f"--packet-frames {packet_frames}.")
