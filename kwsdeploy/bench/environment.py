"""The machine a benchmark ran on: CPU model and flags, cores, threads, library versions, GPU.

No paths and no host names: the result files are meant to be committed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

# CPU flags that decide which kernels ONNX Runtime and torch pick.
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                     "amx_int8", "neon", "asimddp")
LIBRARIES = ("kwsdeploy", "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "tensorrt", "pymicro-wakeword")


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "flags", "features") and key not in out:
                out[key] = value.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU's marketing name (or platform's guess)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags of INTERESTING_FLAGS this CPU has."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("features") or "").split())
    return [f for f in INTERESTING_FLAGS if f in have]


def machine_slug() -> str:
    """A folder name for this machine's results: CPU model, lower case, and usable CPUs, e.g. 'amd-epyc-2c'.

    An x86 CPU with AVX2 but no AVX-512 gets '-avx2' after its model ('amd-epyc-avx2-2c'): cloud CPUs
    often report only the family ("AMD EPYC"), which covers both kinds, and their int8 and fp32 kernels differ.
    """
    name = "".join(c if c.isalnum() else "-" for c in cpu_model().lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    flags = cpu_flags()
    simd = "-avx2" if "avx2" in flags and "avx512f" not in flags else ""
    return f"{name or 'cpu'}{simd}-{usable_cpus()}c"


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def library_versions() -> dict[str, str | None]:
    """Installed version of each library that matters (None when absent)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu() -> str | None:
    """The first CUDA device's name when torch sees one (without initialising CUDA otherwise)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA install is "no GPU" here
        return None
    return None


def describe(threads: int) -> dict[str, Any]:
    """Everything about the machine a result needs to be read against."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "threads": int(threads),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
        "gpu": gpu(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
