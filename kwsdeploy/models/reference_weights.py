"""Load state dicts saved by the reference (TorchKWS / KWM) into our models, strictly.

Each family registers a key map (reference state dict -> our state dict) with
`register_reference_map`. Loading is strict: a missing, unexpected or mis-shaped tensor is a
`ReferenceWeightsError` naming the tensor and what was expected.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

KeyMap = Callable[[Mapping[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
_MAPS: dict[str, KeyMap] = {}


class ReferenceWeightsError(ValueError):
    """A reference state dict that does not fit the model (the message names the tensor)."""


def register_reference_map(family: str, fn: KeyMap) -> KeyMap:
    """Register `fn(reference_state, model) -> our_state` as the key map of `family`."""
    _MAPS[family] = fn
    return fn


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename each key by the first regex rule (pattern, replacement) that matches it; a key no rule
    matches passes through unchanged (and is reported as unexpected by the strict check)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                break
        out[new] = value
    return out


def model_family(model: nn.Module) -> str:
    """The registry family of a model built by `create()`; a clear error for anything else."""
    from kwsdeploy.models.registry import NotAKwsModelError, kws_info

    try:
        family = kws_info(model).family
    except NotAKwsModelError as exc:
        raise ReferenceWeightsError(str(exc)) from None
    return family


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "state dict") -> None:
    """Raise one clear error for the first missing, unexpected or mis-shaped tensor."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    if missing:
        raise ReferenceWeightsError(
            f"The {what} lacks tensor {missing[0]!r} (shape {tuple(ours[missing[0]].shape)})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; is it a checkpoint of a different model or size?"
        )
    if unexpected:
        raise ReferenceWeightsError(
            f"The {what} has unexpected tensor {unexpected[0]!r}"
            + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
            + "; is it a checkpoint of a different model or size?"
        )
    for k, v in ours.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ReferenceWeightsError(
                f"Tensor {k!r} has shape {tuple(state[k].shape)} in the {what}, expected {tuple(v.shape)}; "
                "check the model name, size and number of classes."
            )


def load_reference_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Map a reference state dict onto `model` (built by `create`) and load it strictly."""
    family = model_family(model)
    if family not in _MAPS:
        import importlib

        importlib.import_module(f"kwsdeploy.models.{family}")
    if family not in _MAPS:
        raise ReferenceWeightsError(f"The reference has no '{family}' models to import weights from.")
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ReferenceWeightsError(f"Entry {k!r} of the state dict is a {type(v).__name__}, not a tensor.")
    mapped = _MAPS[family](state_dict, model)
    check_state_dict(model, mapped, what="reference state dict (after mapping its keys)")
    model.load_state_dict(mapped, strict=True)
    return model
