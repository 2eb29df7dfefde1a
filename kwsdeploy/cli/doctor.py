"""`kwsdeploy doctor`: what is installed, what each missing piece disables, and the CPU's features."""

from __future__ import annotations

import importlib
import json
import platform
import shutil
import subprocess
import sys
from typing import Any, Callable

import typer

# (name, how to probe, what it enables, how to install it)
PIECES: tuple[tuple[str, str, str, str], ...] = (
    ("torch", "module:torch", "training, export, the torch step forms (the bundle runtime needs none)", "pip install torch"),
    ("onnxruntime", "module:onnxruntime", "bundles: verify, stream/eval-stream --bundle, benchmark ort", "pip install onnxruntime"),
    ("tensorrt", "module:tensorrt", "engine build, --backend tensorrt", "pip install 'kwsdeploy[trt]' (on a machine with a GPU)"),
    ("mamba-ssm", "module:mamba_ssm", "the GPU fast path of Keyword Mamba (the plain-torch path is used without it)", "pip install 'kwsdeploy[gpu]'"),
    ("causal-conv1d", "module:causal_conv1d", "the fused causal conv of mamba-ssm", "pip install 'kwsdeploy[gpu]'"),
    ("matplotlib", "module:matplotlib", "training curves and confusion plots (PNG)", "pip install 'kwsdeploy[plot]'"),
    ("torchaudio", "module:torchaudio", "checking our MFCC against torchaudio's", "pip install 'kwsdeploy[audio]'"),
    ("pymicro-wakeword", "module:pymicro_wakeword", "the microWakeWord peer in benchmarks", "pip install 'kwsdeploy[peers]'"),
    ("espeak-ng", "binary:espeak-ng", "espeak-ng voices of 'data synth'", "apt-get install espeak-ng"),
    ("flite", "binary:flite", "flite voices of 'data synth'", "apt-get install flite"),
    ("festival", "binary:text2wave", "festival voices of 'data synth'", "apt-get install festival"),
)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "asimd", "asimddp", "sve", "fphp", "asimdhp")


def _version(module) -> str:
    return str(getattr(module, "__version__", "") or getattr(module, "VERSION", "") or "installed")


def probe(spec: str, importer: Callable[[str], Any] = importlib.import_module) -> tuple[bool, str]:
    """(present, version or reason) of 'module:NAME' or 'binary:NAME'."""
    kind, name = spec.split(":", 1)
    if kind == "binary":
        path = shutil.which(name)
        return (True, path) if path else (False, "not on PATH")
    try:
        return True, _version(importer(name))
    except Exception as exc:  # ImportError, or a broken install raising anything
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def cpu_features() -> dict[str, Any]:
    """Model name, cores and the SIMD flags that matter for ONNX Runtime and torch kernels."""
    info: dict[str, Any] = {"machine": platform.machine(), "model": platform.processor() or "", "flags": []}
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags |= set(value.split())
        elif key in ("model name", "cpu model"):
            info["model"] = value.strip()
    info["flags"] = [f for f in CPU_FLAGS if f in flags]
    import os

    info["cores_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return info


def gpu_info(torch_present: bool) -> list[str]:
    """GPU names seen by torch, else by nvidia-smi; empty without a GPU."""
    if torch_present:
        try:
            import torch

            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=10)
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            return []
    return []


def report(importer: Callable[[str], Any] = importlib.import_module) -> dict[str, Any]:
    """Everything `doctor` prints, as data."""
    import kwsdeploy

    pieces = []
    for name, spec, enables, install in PIECES:
        ok, detail = probe(spec, importer)
        pieces.append({"name": name, "present": ok, "detail": detail, "enables": enables,
                       "install": None if ok else install})
    by = {p["name"]: p for p in pieces}
    providers: list[str] = []
    if by["onnxruntime"]["present"]:
        try:
            providers = list(importer("onnxruntime").get_available_providers())
        except Exception:
            providers = []
    return {
        "kwsdeploy": kwsdeploy.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "pieces": pieces, "onnxruntime_providers": providers, "gpus": gpu_info(by["torch"]["present"]),
        "cpu": cpu_features(),
    }


def register(app: typer.Typer) -> None:
    """Add `doctor` to the CLI."""

    @app.command("doctor")
    def doctor_cmd(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
        """What is installed (torch, ONNX Runtime and its providers, TensorRT, mamba-ssm, GPU, TTS engines),
        what each missing piece disables, and the CPU's SIMD features."""
        r = report()
        if as_json:
            typer.echo(json.dumps(r, indent=1))
            return
        typer.echo(f"kwsdeploy {r['kwsdeploy']} on Python {r['python']} ({r['platform']})")
        for p in r["pieces"]:
            if p["present"]:
                typer.echo(f"  ok       {p['name']:<16} {p['detail']}")
            else:
                typer.echo(f"  missing  {p['name']:<16} disables: {p['enables']}; install: {p['install']}")
        typer.echo(f"ONNX Runtime providers: {', '.join(r['onnxruntime_providers']) or 'none'}")
        typer.echo(f"GPUs: {', '.join(r['gpus']) or 'none (CPU only: TensorRT and the mamba-ssm fast path are off)'}")
        cpu = r["cpu"]
        typer.echo(f"CPU: {cpu['model'] or cpu['machine']}, {cpu['cores_usable']} usable cores; "
                   f"SIMD: {', '.join(cpu['flags']) or 'none of ' + ', '.join(CPU_FLAGS[:6])}")
