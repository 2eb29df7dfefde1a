"""`to_streaming(model)`: the step form of any model built by `kwsdeploy.models.create`.

Families whose card declares `exact` register a converter with `register_converter(family, fn)`
(fn(model, **options) -> streaming nn.Module); `windowed` cards get the generic ring-buffer
recompute of `kwsdeploy.streaming.windowed`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from torch import nn

from kwsdeploy.config import FeatureConfig

_CONVERTERS: dict[str, Callable[..., nn.Module]] = {}


def register_converter(family: str, fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register `fn(model, **options) -> step module` as the exact converter of `family`."""
    _CONVERTERS[family] = fn
    return fn


def to_streaming(
    model: nn.Module, mode: str | None = None, feature_config: FeatureConfig | None = None, **options: Any
) -> nn.Module:
    """Convert a trained offline model into its step form (eval mode, BatchNorm folded).

    mode: None (the card's own mode), "windowed" (any model), or "exact" (cards that declare it).
    packet_frames (option): frames per step call: the hop of a windowed stream, or a multiple of an
    exact step form's natural packet (fewer, larger calls: less dispatch overhead, more latency).
    feature_config: the frontend the model was trained with (a checkpoint card's); it goes into the
    stream spec. A reference (clip-relative top_db) frontend streams only windowed, with the clamp
    recomputed on every window (`ReferenceWindowedStream`).
    """
    from kwsdeploy.models.registry import kws_info

    kws = kws_info(model)
    card = kws.card
    fc = feature_config or FeatureConfig.deployable(kws.n_mfcc)
    mode = mode or card.streaming
    model = model.eval()
    if mode == "windowed":
        from kwsdeploy.streaming.windowed import ReferenceWindowedStream, WindowedStream

        cls = WindowedStream if fc.causal else ReferenceWindowedStream
        return cls(model, feature_config=fc, **options).eval()
    if mode != "exact":
        raise ValueError(f"Unknown streaming mode {mode!r}; use 'exact' or 'windowed'.")
    if card.streaming != "exact":
        raise ValueError(
            f"{card.name} streams only in 'windowed' mode: {card.notes or 'it is not causal'}"
        )
    if not fc.causal:
        raise ValueError(
            f"{card.name} was trained with the reference frontend (top_db relative to the whole clip), "
            "which cannot stream frame by frame; stream it with --mode windowed, or train with deployable features."
        )
    if card.family not in _CONVERTERS:
        importlib.import_module(f"kwsdeploy.streaming.{card.family}")
    smodel = _CONVERTERS[card.family](model, **options).eval()
    smodel.stream_spec = dataclasses.replace(smodel.stream_spec, feature_config=fc)
    return smodel
