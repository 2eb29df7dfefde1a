"""The CPU thread count every command and runner uses unless told otherwise: 1 (torch-free).

One intra-op thread is what a keyword spotter gets on a device and what our numbers are measured
with; ONNX Runtime's and torch's defaults (all cores) only burn more CPU on these tiny graphs.
`kwsdeploy --threads N <command>` (or KWSDEPLOY_THREADS=N) changes it for a whole command.
"""

from __future__ import annotations

import os
import sys

ENV = "KWSDEPLOY_THREADS"
DEFAULT_THREADS = 1


def default_threads() -> int:
    """KWSDEPLOY_THREADS when set to a positive integer, else DEFAULT_THREADS."""
    try:
        n = int(os.environ.get(ENV, DEFAULT_THREADS))
    except ValueError:
        return DEFAULT_THREADS
    return n if n >= 1 else DEFAULT_THREADS


def set_default_threads(n: int) -> None:
    """Make `n` the default of this process: ONNX Runtime sessions and torch (now or when imported)."""
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, got {n}.")
    os.environ[ENV] = str(int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))
    else:  # torch sizes its intra-op pool from these when it starts
        os.environ["OMP_NUM_THREADS"] = str(int(n))
        os.environ["MKL_NUM_THREADS"] = str(int(n))
