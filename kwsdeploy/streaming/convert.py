"""`to_streaming(model)`: the step form of any model built by `kwsdeploy.models.create`.

Families whose card declares `exact` register a converter with `register_converter(family, fn)`
(fn(model, **options) -> streaming nn.Module); `windowed` cards get the generic ring-buffer
recompute of `kwsdeploy.streaming.windowed`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

_CONVERTERS: dict[str, Callable[..., nn.Module]] = {}


def register_converter(family: str, fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _CONVERTERS[family] = fn
    return fn


def to_streaming(model: nn.Module, mode: str | None = None, **options: Any) -> nn.Module:
    """Convert a trained offline model into its step form (eval mode, BatchNorm folded).

    mode: None (the card's own mode), "windowed" (any model), or "exact" (cards that declare it).
    """
    from kwsdeploy.models.registry import get_card

    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("to_streaming() needs a model built by kwsdeploy.models.create().")
    card = get_card(name)
    mode = mode or card.streaming
    model = model.eval()
    if mode == "windowed":
        from kwsdeploy.streaming.windowed import WindowedStream

        return WindowedStream(model, **options).eval()
    if mode != "exact":
        raise ValueError(f"Unknown streaming mode {mode!r}; use 'exact' or 'windowed'.")
    if card.streaming != "exact":
        raise ValueError(
            f"{card.name} streams only in 'windowed' mode: {card.notes or 'it is not causal'}"
        )
    if card.family not in _CONVERTERS:
        importlib.import_module(f"kwsdeploy.streaming.{card.family}")
    return _CONVERTERS[card.family](model, **options).eval()
