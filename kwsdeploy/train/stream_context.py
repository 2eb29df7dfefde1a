"""`--stream-context`: each training clip follows the tail of another clip of its batch, and the loss
reads the logits at the clip's end through `forward_window`, as a never-reset stream would."""

from __future__ import annotations

import torch

from kwsdeploy.config import FeatureConfig


def streams_in_context(model) -> bool:
    """Whether `model` can be trained with --stream-context (a causal step model with forward_window)."""
    if not getattr(model, "causal", False) or not hasattr(model, "forward_window"):
        return False
    return getattr(model, "readout", "mean") == "mean"


def check_streams_in_context(model, name: str) -> None:
    """A one-line error when model `name` cannot train with --stream-context."""
    if not streams_in_context(model):
        raise ValueError(
            f"--stream-context needs a causal model with an exact step form (tcresnet8-causal, "
            f"bcresnet1-causal, matchboxnet-causal, kwm-causal-* with readout 'mean'); {name} is not one."
        )


def context_samples(seconds: float, feature_config: FeatureConfig, model) -> int:
    """`seconds` of context in samples, rounded to whole packets of the step form (hop x time stride),
    so the clip's frames meet the pooling window as they do in a stream."""
    unit = feature_config.hop_length * int(getattr(model, "time_stride", 1))
    return int(round(seconds * feature_config.sample_rate / unit)) * unit


def prepend_context(wave: torch.Tensor, samples: int) -> torch.Tensor:
    """[B, T] -> [B, samples + T]: before each clip, the last `samples` of the previous clip of the
    batch (the first clip gets the last clip's tail); unchanged when `samples` is 0."""
    if not samples:
        return wave
    return torch.cat([torch.roll(wave, 1, dims=0)[:, -samples:], wave], dim=1)
