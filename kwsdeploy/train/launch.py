"""`kwsdeploy train --nproc N`: re-run the same command under torchrun on this node (N ranks).

Torch-free until it runs: the command is `python -m torch.distributed.run --standalone
--nproc-per-node N -m kwsdeploy <args without --nproc>`. Several nodes: call torchrun directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """`argv` without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torchrun command line that runs `kwsdeploy <args>` on `nproc` local ranks."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "kwsdeploy", *strip_option(args, "--nproc")]


def inside_torchrun() -> bool:
    """Whether this process is a rank that torchrun started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def relaunch(nproc: int, args: Sequence[str]) -> int:
    """Run `kwsdeploy <args>` under torchrun with `nproc` ranks; its exit status."""
    return subprocess.call(torchrun_command(nproc, args))
