"""Optional mamba-ssm kernels (CUDA), imported lazily: used to check our plain-torch Mamba math.

`load_mamba_ssm()` returns mamba-ssm's `selective_scan_fn` and `selective_state_update`, or raises
an ImportError that says which extra to install. Nothing here is needed on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MambaSsmOps:
    """The two mamba-ssm kernels our scan and step are compared with."""

    selective_scan_fn: Callable
    selective_state_update: Callable


def load_mamba_ssm() -> MambaSsmOps:
    """Import mamba-ssm's kernels; a clear ImportError if the package (or CUDA) is missing."""
    import torch

    if not torch.cuda.is_available():
        raise ImportError("mamba-ssm kernels need a CUDA GPU; none is available here.")
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except ImportError as exc:  # the package, or one of its compiled parts, is absent
        raise ImportError(
            f"mamba-ssm is not importable ({exc}); install the GPU extra: pip install 'kwsdeploy[gpu]'."
        ) from exc
    return MambaSsmOps(selective_scan_fn, selective_state_update)


def mamba_ssm_available() -> bool:
    """True where mamba-ssm's CUDA kernels can be used."""
    try:
        load_mamba_ssm()
    except ImportError:
        return False
    return True
