"""Windowed streaming for any model: a ring buffer of the last window of features, recomputed
every hop. Exact by construction: once a full window has been fed, the logits are the offline
model's on that window."""

from __future__ import annotations

import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import CLIP_FRAMES, WINDOW_HOP_FRAMES, StateSpec, StreamSpec
from kwsdeploy.models.registry import kws_info
from kwsdeploy.streaming.layers import StepModule

def window_hop(packet_frames: int | None, hop_frames: int | None, window_frames: int) -> int:
    """The hop of a windowed stream: `packet_frames` (its name across modes) or `hop_frames`, default 10."""
    if packet_frames is not None and hop_frames is not None and packet_frames != hop_frames:
        raise ValueError(f"packet_frames={packet_frames} and hop_frames={hop_frames} disagree; pass one.")
    hop = next((h for h in (packet_frames, hop_frames) if h is not None), WINDOW_HOP_FRAMES)
    if not 1 <= hop <= window_frames:
        raise ValueError(f"hop_frames must be in 1..{window_frames}, got {hop}.")
    return int(hop)


class WindowedStream(StepModule):
    """Step form `logits, new_window = f(features_packet, window)` around an offline model."""

    def __init__(
        self,
        model: nn.Module,
        packet_frames: int | None = None,
        feature_config: FeatureConfig | None = None,
        window_frames: int = CLIP_FRAMES,
        hop_frames: int | None = None,
    ) -> None:
        super().__init__()
        hop_frames = window_hop(packet_frames, hop_frames, window_frames)
        self.model = model.eval()
        kws = kws_info(model)
        n_mfcc = kws.n_mfcc
        self.stream_spec = StreamSpec(
            mode="windowed",
            packet_frames=hop_frames,
            delay_frames=0,
            window_frames=window_frames,
            n_mfcc=n_mfcc,
            num_classes=kws.num_classes,
            states=(StateSpec("state.window.features", (n_mfcc, window_frames)),),
            feature_config=feature_config or FeatureConfig.deployable(n_mfcc),
        )

    def forward(self, features: torch.Tensor, *state: torch.Tensor):
        (window,) = state
        hop = features.shape[-1]
        window = torch.cat([window[..., hop:], features], dim=-1)
        return self.model(window.unsqueeze(1)), window


class ReferenceWindowedStream(StepModule):
    """Windowed streaming for models trained on the reference frontend (top_db relative to the clip).

    The clip-relative clamp needs the whole window, so the step takes unclamped dB-mel frames
    [B, n_mels, hop] (from `StreamingLogMel`), keeps the last window of them, and applies the clamp
    (window max - top_db) and the DCT inside the step: the same MFCC the reference computes on that
    second of audio.
    """

    def __init__(
        self,
        model: nn.Module,
        packet_frames: int | None = None,
        feature_config: FeatureConfig | None = None,
        window_frames: int = CLIP_FRAMES,
        hop_frames: int | None = None,
    ) -> None:
        super().__init__()
        from kwsdeploy.features import MFCC

        if feature_config is None or feature_config.causal:
            raise ValueError("ReferenceWindowedStream is for the reference (clip_top_db) frontend; use WindowedStream.")
        hop_frames = window_hop(packet_frames, hop_frames, window_frames)
        self.model = model.eval()
        self.mfcc = MFCC(feature_config)
        self.floor_db = float(10.0 * torch.log10(torch.tensor(feature_config.amin)))
        self.stream_spec = StreamSpec(
            mode="windowed",
            packet_frames=hop_frames,
            delay_frames=0,
            window_frames=window_frames,
            n_mfcc=feature_config.n_mels,  # the step's input is dB mel, not MFCC
            num_classes=kws_info(model).num_classes,
            states=(StateSpec("state.window.log_mel", (feature_config.n_mels, window_frames)),),
            feature_config=feature_config,
        )

    def forward(self, features: torch.Tensor, *state: torch.Tensor):
        """`features`: unclamped dB mel [B, n_mels, hop] (this stream's input); state: the window."""
        (window,) = state
        log_mel = features
        # The window is kept relative to the amin floor (10*log10(amin) dB), so the zero state of the
        # step contract is an empty window of digital silence, as the offline frontend sees zeros.
        hop = log_mel.shape[-1]
        window = torch.cat([window[..., hop:], log_mel - self.floor_db], dim=-1)
        return self.model(self.mfcc.from_log_mel_db(window + self.floor_db).unsqueeze(1)), window
