"""Stream scores studied on the TUNE recording only (validation speaker + the `tune` half of the held-out
synthetic speech, as `kwsdeploy tune` builds it): each bundle's per-packet logits are dumped once through
its exact step form in ONNX Runtime, then score variants are compared offline in numpy, `tune`'s choice
is redone with the old and the new choices, and the keywords the stream misses are sorted by cause.

Usage: python benchmarks/detection_scores.py PREPARED --bundle NAME=DIR [--bundle ...] --cache DIR
       [--minutes 128] [--what variants,tune,misses]
Writes nothing but the cache (audio, parts, logits, clip logits); prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from kwsdeploy.contract import DetectionSettings
from kwsdeploy.runtime.detect import DEFAULT_IGNORE, softmax
from kwsdeploy.streaming.det import THRESHOLDS, ScoreStream, det_point, detections, score_stream
from kwsdeploy.streaming.det_report import tune_settings
from kwsdeploy.streaming.recording import Part

REFRACTORY, GAP = 1.2, 0.5  # the shipped bundles' refractory and gap
BUDGETS = (0.5, 1.0, 2.0, 3.0, 5.0)


def dump(prepared: Path, bundles: dict[str, Path], cache: Path, minutes: float) -> None:
    """The tune recording (once) and each bundle's logits and clip logits on it (once)."""
    from kwsdeploy.calibration.report import clip_logits
    from kwsdeploy.data.detection_sets import build, split_keywords
    from kwsdeploy.placement import centre_clip
    from kwsdeploy.runtime.bundle import load_bundle
    from kwsdeploy.sources import BundleSource

    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "info.json").exists():
        audio, parts, info = build("keywords", prepared, "valid", "tune", minutes, 0)
        np.save(cache / "audio.npy", audio)
        info["parts"] = [[p.kind, p.start, p.end, p.label] for p in parts]
        (cache / "info.json").write_text(json.dumps(info))
    audio = None
    words = split_keywords(prepared, "valid")
    order = np.random.default_rng(0).permutation(len(words))  # the recording's keyword order (build, seed 0)
    for name, path in bundles.items():
        if not (cache / f"logits-{name}.npz").exists():
            audio = np.load(cache / "audio.npy") if audio is None else audio
            src = BundleSource(path)
            np.savez(cache / f"logits-{name}.npz", logits=src.logits(audio).astype(np.float32),
                     labels=np.array(src.labels), hop=src.hop_seconds)
        if not (cache / f"clips-{name}.npz").exists():  # each keyword alone: the trimmed word centred in 1 s
            b = load_bundle(path)
            f = b.manifest.file("step", "fp32")
            clips = np.stack([centre_clip(words[i][0]) for i in order])
            np.savez(cache / f"clips-{name}.npz", logits=clip_logits(b.path / f.path, "step", f.input_kind, clips,
                                                                      b.manifest.feature_config),
                     labels=np.array([words[i][1] for i in order]))


def load(cache: Path, name: str):
    info = json.loads((cache / "info.json").read_text())
    parts = [Part(k, s, e, lab) for k, s, e, lab in info["parts"]]
    z = np.load(cache / f"logits-{name}.npz")
    return z["logits"].astype(np.float64), [str(x) for x in z["labels"]], float(z["hop"]), parts, info["seconds"]


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Causal mean over n rows, zeros before the start (the detector's smoothing)."""
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    out = c[1:].copy()
    out[n:] -= c[1:-n]
    return out / n


def running_max(x: np.ndarray, n: int) -> np.ndarray:
    out = x.copy()
    for lag in range(1, n):
        out[lag:] = np.maximum(out[lag:], x[:-lag])
    return out


def exponential(x: np.ndarray, tau_packets: float) -> np.ndarray:
    a, s, out = float(np.exp(-1.0 / tau_packets)), np.zeros(x.shape[1:]), np.empty_like(x)
    for t in range(len(x)):
        s = a * s + (1 - a) * x[t]
        out[t] = s
    return out


def variants(logits: np.ndarray, labels: list[str], hop: float) -> dict:
    """name -> (function giving per-keyword scores [T, K], whether the score is a probability)."""
    li = {lab: i for i, lab in enumerate(labels)}
    keys = np.array([i for i, lab in enumerate(labels) if lab not in DEFAULT_IGNORE])
    sil, unk = li["_silence_"], li["_unknown_"]
    p = softmax(logits)
    n = lambda s: max(1, int(round(s / hop)))  # noqa: E731
    v: dict = {}
    for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        v[f"mean {s} s (today's score)"] = (lambda s=s: moving_average(p, n(s))[:, keys], True)
    for s in (0.4, 0.6):
        v[f"mean {s} s, p_k / (1 - p_silence)"] = (
            lambda s=s: moving_average(p[:, keys] / np.maximum(1 - p[:, [sil]], 1e-9), n(s)), True)
        v[f"mean {s} s, keywords only renormalised"] = (
            lambda s=s: moving_average(p[:, keys] / p[:, keys].sum(1, keepdims=True), n(s)), True)
        v[f"mean {s} s, p_k / (p_k + p_unknown)"] = (
            lambda s=s: moving_average(p[:, keys] / (p[:, keys] + p[:, [unk]]), n(s)), True)
        v[f"geometric mean {s} s"] = (lambda s=s: np.exp(moving_average(np.log(np.maximum(p, 1e-12)), n(s)))[:, keys], True)
        v[f"mean {s} s of log p_k - log p_unknown"] = (
            lambda s=s: moving_average(np.log(np.maximum(p[:, keys], 1e-12)) - np.log(np.maximum(p[:, [unk]], 1e-12)),
                                       n(s)), False)
        v[f"mean {s} s of logits"] = (lambda s=s: moving_average(logits[:, keys], n(s)), False)
        am = np.argmax(p, axis=1)
        v[f"argmax held: share of {s} s"] = (
            lambda s=s, am=am: moving_average((am[:, None] == keys[None]).astype(float), n(s)), True)
        for t in (0.5, 2.0):
            v[f"mean {s} s, temperature {t}"] = (lambda s=s, t=t: moving_average(softmax(logits, t), n(s))[:, keys], True)
    for s in (0.2, 0.4):
        v[f"max of raw over {s} s"] = (lambda s=s: running_max(p[:, keys], n(s)), True)
        v[f"max over {s} s of the 0.4 s mean"] = (lambda s=s: running_max(moving_average(p, n(0.4))[:, keys], n(s)), True)
    for tau in (0.2, 0.4):
        v[f"exponential, tau {tau} s"] = (lambda tau=tau: exponential(p, tau / hop)[:, keys], True)
    return v


def as_stream(scores: np.ndarray, labels: list[str], hop: float) -> ScoreStream:
    keys = np.array([i for i, lab in enumerate(labels) if lab not in DEFAULT_IGNORE])
    pick = np.argmax(scores, axis=1)
    return ScoreStream(keys[pick], scores[np.arange(len(pick)), pick], hop, tuple(labels), tuple(int(k) for k in keys))


def heard_at_budgets(stream: ScoreStream, parts, seconds: float, prob: bool) -> dict[float, float]:
    """Keywords heard with one threshold at each budget (non-keyword FA/h), the lowest threshold at and above
    which every threshold stays within it (as `operating_point`); grid: tune's plus quantiles of the score."""
    grid = np.unique(np.round(np.quantile(stream.score, 1 - np.logspace(-6.5, -0.5, 160)), 7))
    if prob:
        grid = np.unique(np.concatenate([grid, THRESHOLDS]))
    heard, open_ = {b: 0.0 for b in BUDGETS}, set(BUDGETS)
    for th in grid[::-1]:
        pt = det_point(stream, parts, seconds, float(th), REFRACTORY, GAP)
        for b in sorted(open_):
            if pt.non_keyword_false_alarms_per_hour > b:
                open_.discard(b)
            else:
                heard[b] = 1.0 - pt.false_reject_rate
        if not open_:
            break
    return heard


def misses(stream: ScoreStream, parts, threshold: float, clip_right: np.ndarray, tol: float = 1.0) -> Counter:
    """(cause, clip right?) of every keyword at one threshold: heard, substituted (another keyword fired in its
    window), blocked (its score crossed in the window but refractory or gap held the event), late (crossed only
    after the window), too low, never the best keyword."""
    hop = stream.hop_seconds
    found = sorted(detections(stream, threshold, REFRACTORY, GAP), key=lambda d: d[1])
    keys = [p for p in parts if p.kind == "keyword"]
    hit = np.zeros(len(keys), bool)
    ks, ke = np.array([p.start for p in keys]), np.array([p.end + tol for p in keys])
    kl = np.array([p.label for p in keys], dtype=object)
    for lab, t in found:
        m = np.flatnonzero((ks <= t) & (t <= ke) & (kl == lab) & ~hit)
        if len(m):
            hit[m[0]] = True
    ft = np.array([t for _, t in found])
    fl = np.array([lab for lab, _ in found], dtype=object)
    out: Counter = Counter()
    for i, p in enumerate(keys):
        k = stream.labels.index(p.label)
        a, b = max(int(np.ceil(p.start / hop)) - 1, 0), int(np.floor((p.end + tol) / hop))
        mine = stream.score[a:b][stream.best[a:b] == k]
        after = stream.score[b: b + int(0.6 / hop)][stream.best[b: b + int(0.6 / hop)] == k]
        inside = (ft >= p.start) & (ft <= p.end + tol)
        if hit[i]:
            cause = "heard"
        elif inside.any() and (fl[inside] != p.label).any():
            cause = "substituted"
        elif len(mine) and mine.max() >= threshold:
            cause = "blocked"
        elif len(after) and after.max() >= threshold:
            cause = "late"
        elif len(mine):
            cause = "too low"
        else:
            cause = "never the best keyword"
        out[(cause, bool(clip_right[i]))] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path)
    ap.add_argument("--bundle", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=128.0)
    ap.add_argument("--what", default="variants,tune,misses")
    args = ap.parse_args()
    bundles = {b.split("=", 1)[0]: Path(b.split("=", 1)[1]) for b in args.bundle}
    dump(args.prepared, bundles, args.cache, args.minutes)
    what = set(args.what.split(","))
    base = DetectionSettings(refractory_seconds=REFRACTORY, min_gap_seconds=GAP)
    if "variants" in what:
        print("| model | score | heard at " + " / ".join(f"{b:g}" for b in BUDGETS) + " FA/h (one threshold) |")
        print("|---|---|---|")
        for name in bundles:
            logits, labels, hop, parts, seconds = load(args.cache, name)
            for vname, (fn, prob) in variants(logits, labels, hop).items():
                h = heard_at_budgets(as_stream(fn(), labels, hop), parts, seconds, prob)
                print(f"| {name} | {vname} | " + " / ".join(f"{100 * h[b]:.1f}" for b in BUDGETS) + " |", flush=True)
    if "tune" in what:
        print("\n| model | `tune` choices | chosen | heard on the tune recording |\n|---|---|---|---:|")
        for name in bundles:
            logits, labels, hop, parts, seconds = load(args.cache, name)
            for title, kw in (("smoothing 0.1/0.2/0.4 s, temperature 1 (before)",
                               dict(smoothing_choices=(0.1, 0.2, 0.4), temperature_choices=(1.0,))),
                              ("smoothing 0.1/0.2/0.4/0.6 s, temperature 1",
                               dict(temperature_choices=(1.0,))),
                              ("smoothing 0.1/0.2/0.4/0.6 s, temperature 1/0.5 (now)", {})):
                s, tuned = tune_settings(logits, labels, hop, parts, seconds, 1.0, base, **kw)
                print(f"| {name} | {title} | {s.threshold_text()}, {s.smoothing_seconds:g} s, T {s.temperature:g} | "
                      f"{100 * (1 - tuned['false_reject_rate']):.1f} % |", flush=True)
    if "misses" in what:
        causes = ("heard", "substituted", "blocked", "late", "too low", "never the best keyword")
        print("\n| model (one threshold, 0.4 s) | clip right | " + " | ".join(causes) + " |")
        print("|---|---:|" + "---|" * len(causes))
        for name in bundles:
            logits, labels, hop, parts, seconds = load(args.cache, name)
            z = np.load(args.cache / f"clips-{name}.npz")
            right = np.array([labels[j] == lab for j, lab in zip(z["logits"].argmax(1), z["labels"])])
            s, _ = tune_settings(logits, labels, hop, parts, seconds, 1.0, base, smoothing_choices=(0.4,),
                                 per_keyword=False, temperature_choices=(1.0,))
            c = misses(score_stream(logits, labels, hop, s.smoothing_packets(hop)), parts, s.threshold, right)
            print(f"| {name} (threshold {s.threshold:g}) | {100 * right.mean():.1f} % | "
                  + " | ".join(f"{c[(k, True)]} + {c[(k, False)]}" for k in causes) + " |", flush=True)


if __name__ == "__main__":
    main()
