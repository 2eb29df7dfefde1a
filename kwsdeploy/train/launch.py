"""`kwsdeploy train --nproc N`: re-run the same command under torchrun on this node (N ranks).

Torch-free until it runs: the command is torchrun's agent (`--standalone --nproc-per-node N -m
kwsdeploy <args without --nproc>`) run by this module, which exits with the ranks' own status (2 for
bad input, whose one-line error the ranks printed) instead of the agent's traceback; with `--debug`
it is plain `python -m torch.distributed.run`. Several nodes: call torchrun directly.
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
    """The command line that runs `kwsdeploy <args>` on `nproc` local ranks under torchrun's agent."""
    agent = "torch.distributed.run" if "--debug" in args else "kwsdeploy.train.launch"
    return [sys.executable, "-m", agent, "--standalone", f"--nproc-per-node={nproc}",
            "-m", "kwsdeploy", *strip_option(args, "--nproc")]


def inside_torchrun() -> bool:
    """Whether this process is a rank that torchrun started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def relaunch(nproc: int, args: Sequence[str]) -> int:
    """Run `kwsdeploy <args>` under torchrun with `nproc` ranks; its exit status."""
    return subprocess.call(torchrun_command(nproc, args))


def run_agent(argv: Sequence[str]) -> int:
    """torchrun's agent on `argv`; a failed rank gives its exit status, not the agent's traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(list(argv))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(run_agent(sys.argv[1:]))
