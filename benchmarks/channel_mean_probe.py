"""Probe: does matching a speaker's long-term MFCC mean to the training speakers' help a shipped checkpoint?

Jackson's recordings (the unseen test speaker) carry little energy above 1 kHz; a fixed channel is an
offset in the log-mel (so MFCC) domain, which a long-term mean removes. Two test-time probes, neither
retrains anything:

- `clips`: every clip of a prepared split's test speaker with his mean MFCC (over the frames of his
  keyword clips within --gate-db of each clip's loudest frame) replaced by the training speakers' mean
  (same frames of the train split's keyword clips), all coefficients or c1 and up; and per clip (each
  clip's own mean replaced). Accuracy and per-class recall, against the plain clips.
- `stream`: the `digits` (or `keywords`) recording of `kwsdeploy eval-stream` through the torch step form,
  each feature frame shifted by an exponential moving average of (frame - training mean) over frames
  whose c0 is above a floor (time constant --frames), against the plain stream, at the card's settings;
  and shifted by one constant, an enrolment estimate: the speaker's mean over the loud frames of his first
  --enrol clips of each keyword in the test split (the labels pick the clips, as a user enrolling would say
  each word; the mean itself uses none) minus the training mean. Those clips are also in the recording:
  the estimate is his, not the stream's.

Usage: python benchmarks/channel_mean_probe.py clips|stream CHECKPOINT PREPARED [--frames N] [--gate-db D]
       [--floor-db F] [--skip-c0] [--recording digits] [--enrol 5]
(PREPARED: the prepared FSDD tree of the README's Data section, `fsdd_real`.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def split_features(ck, data: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """MFCC [N, C, T] and targets [N] of every clip of a prepared split."""
    from kwsdeploy.features import MFCC
    from kwsdeploy.train.evaluate import prepared_split

    ds = prepared_split(data, split, ck.labels)
    waves = np.stack([np.asarray(ds[i][0]) for i in range(len(ds))])
    targets = np.array([int(ds[i][1]) for i in range(len(ds))])
    with torch.no_grad():
        return MFCC(ck.feature_config)(torch.as_tensor(waves, dtype=torch.float32)), targets


def loud_mean(feats: torch.Tensor, targets: np.ndarray, silence: int, gate: float) -> torch.Tensor:
    """Mean MFCC [C] over the frames of keyword clips whose c0 lies within `gate` of the clip's loudest."""
    f = feats[torch.as_tensor(targets != silence)]
    c0 = f[:, 0, :]
    keep = c0 > c0.max(1, keepdim=True).values - gate
    return f.permute(0, 2, 1)[keep].mean(0)


def accuracy(model, feats: torch.Tensor, targets: np.ndarray, labels) -> dict:
    """Top-1 (%) and per-class recall (%) of `model` on MFCC clips."""
    with torch.no_grad():
        pred = model(feats.unsqueeze(1)).argmax(1).numpy()
    recall = {lab: round(100.0 * float(((pred == targets) & (targets == c)).sum()) / int((targets == c).sum()))
              for c, lab in enumerate(labels) if (targets == c).any()}
    return {"top1": round(100.0 * float((pred == targets).mean()), 2), "recall": recall}


def probe_clips(ck, data: Path, gate: float) -> dict:
    silence = ck.labels.index("_silence_")
    f_tr, t_tr = split_features(ck, data, "train")
    f_te, t_te = split_features(ck, data, "test")
    m_tr, m_te = loud_mean(f_tr, t_tr, silence, gate), loud_mean(f_te, t_te, silence, gate)
    model = ck.model.eval()
    matched = f_te - m_te[None, :, None] + m_tr[None, :, None]
    matched_c1 = f_te.clone()
    matched_c1[:, 1:] = matched[:, 1:]
    clip_mean_tr = f_tr[torch.as_tensor(t_tr != silence)].mean(2).mean(0)
    per_clip = f_te - f_te.mean(2, keepdim=True) + clip_mean_tr[None, :, None]
    return {
        "plain": accuracy(model, f_te, t_te, ck.labels),
        "speaker mean matched": accuracy(model, matched, t_te, ck.labels),
        "speaker mean matched, c1 and up": accuracy(model, matched_c1, t_te, ck.labels),
        "per-clip mean matched": accuracy(model, per_clip, t_te, ck.labels),
        "mean difference test - train, c0..c3": [round(float(v), 2) for v in (m_te - m_tr)[:4]],
    }


class _ChannelShift(torch.nn.Module):
    """Wraps a step frontend: each frame minus an EMA of (loud frame - reference mean)."""

    def __init__(self, frontend, reference: torch.Tensor, floor: float, frames: float, skip_c0: bool) -> None:
        super().__init__()
        self.frontend, self.reference, self.floor, self.frames, self.skip_c0 = frontend, reference, floor, frames, skip_c0
        self.offset = None

    def init_state(self, batch: int):
        self.offset = torch.zeros(batch, self.reference.shape[0])
        return self.frontend.init_state(batch)

    def forward(self, packet, cache):
        feats, cache = self.frontend(packet, cache)  # [B, C, T]
        out = []
        for t in range(feats.shape[-1]):
            x = feats[..., t]
            loud = (x[:, :1] > self.floor).to(x.dtype)
            self.offset = self.offset + loud * (x - self.reference - self.offset) / self.frames
            shift = self.offset.clone()
            if self.skip_c0:
                shift[:, 0] = 0
            out.append(x - shift)
        return torch.stack(out, -1), cache


class _ConstantShift(torch.nn.Module):
    """Wraps a step frontend: every frame minus one fixed offset [C] (an enrolment estimate of the channel)."""

    def __init__(self, frontend, offset: torch.Tensor) -> None:
        super().__init__()
        self.frontend, self.offset = frontend, offset

    def init_state(self, batch: int):
        return self.frontend.init_state(batch)

    def forward(self, packet, cache):
        feats, cache = self.frontend(packet, cache)  # [B, C, T]
        return feats - self.offset[None, :, None], cache


def enrolment_clips(targets: np.ndarray, silence: int, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` clips of every keyword class (split order), silence left out."""
    keep = []
    for c in sorted(set(int(t) for t in targets) - {silence}):
        keep.extend(np.flatnonzero(targets == c)[:per_class].tolist())
    return np.asarray(keep, dtype=np.int64)


def probe_stream(ck, checkpoint: Path, data: Path, gate: float, floor_db: float, frames: float, skip_c0: bool,
                 recording: str, enrol: int = 5) -> dict:
    import kwsdeploy.streaming.pipeline as pipeline
    from kwsdeploy.cli._detection import recording_logits
    from kwsdeploy.sources import TorchSource, resolve_settings
    from kwsdeploy.streaming.det_report import report

    silence = ck.labels.index("_silence_")
    f_tr, t_tr = split_features(ck, data, "train")
    reference = loud_mean(f_tr, t_tr, silence, gate)
    floor = float(reference[0]) - floor_db * float(np.sqrt(ck.feature_config.n_mels))
    f_te, t_te = split_features(ck, data, "test")
    picked = enrolment_clips(t_te, silence, enrol)
    offset = loud_mean(f_te[torch.as_tensor(picked)], t_te[picked], silence, gate) - reference
    if skip_c0:
        offset[0] = 0
    plain_frontend = pipeline.make_frontend
    results = {}
    for name in ("plain", "channel shift", f"enrolment shift ({enrol} clips per keyword)"):
        if name == "plain":
            pipeline.make_frontend = plain_frontend
        elif name == "channel shift":
            pipeline.make_frontend = lambda step: _ChannelShift(plain_frontend(step), reference, floor, frames, skip_c0)
        else:
            pipeline.make_frontend = lambda step: _ConstantShift(plain_frontend(step), offset)
        src = TorchSource(checkpoint, None, None, None)
        settings = resolve_settings(src, None, None, None, None, None)
        logits, parts, _, seconds = recording_logits(src, recording, data, "test", "test", 32.0, 0)
        r = report(logits, src.labels, src.hop_seconds, parts, seconds, settings, None)
        at = r["at_settings"]
        results[name] = {"heard_percent": round(100.0 * at["recall"], 1), "false_alarms": at["false_alarms"],
                         "threshold": settings.threshold}
    pipeline.make_frontend = plain_frontend
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("probe", choices=("clips", "stream"))
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data", type=Path, help="prepared FSDD tree (fsdd_real)")
    ap.add_argument("--gate-db", type=float, default=30.0, help="reference frames: within this of the clip's loudest")
    ap.add_argument("--floor-db", type=float, default=10.0, help="stream: frames whose c0 is this far under the reference's count")
    ap.add_argument("--frames", type=float, default=300.0, help="stream: EMA time constant in counted frames")
    ap.add_argument("--skip-c0", action="store_true", help="stream: leave c0 (level) unshifted")
    ap.add_argument("--recording", default="digits")
    ap.add_argument("--enrol", type=int, default=5, help="stream: clips per keyword of the test speaker for the enrolment shift")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kwsdeploy.train.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    gate = args.gate_db * float(np.sqrt(ck.feature_config.n_mels))  # c0 of the orthonormal DCT: dB x sqrt(n_mels)
    if args.probe == "clips":
        out = probe_clips(ck, args.data, gate)
    else:
        out = probe_stream(ck, args.checkpoint, args.data, gate, args.floor_db, args.frames, args.skip_c0, args.recording, args.enrol)
    print(json.dumps({"model": ck.card["model"], "probe": args.probe, **out}, indent=1))


if __name__ == "__main__":
    main()
