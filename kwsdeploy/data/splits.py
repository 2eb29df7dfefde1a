"""From a GSC-layout tree to split entries: lists, speakers, keywords, unknown, silence, rebalance.

A GSC-layout tree has one folder per word of 16 kHz mono WAVs named `<speaker>_nohash_<n>.wav`,
`validation_list.txt`, `testing_list.txt` and `_background_noise_/`. Everything here is seeded
(numpy default_rng per purpose) so the same tree and options always give the same entries.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwsdeploy.data.prepared import CLIP_SAMPLES, SAMPLE_RATE, SILENCE, SPLITS, UNKNOWN
from kwsdeploy.data.wavcheck import check_clip_header, read_noise
from kwsdeploy.labels import GSC35

log = logging.getLogger("kwsdeploy.data")

NOISE_DIR = "_background_noise_"
AUDIO_SUFFIXES = (".wav", ".flac")  # GSC ships WAV; the embedded demo corpus is FLAC
SILENCE_STRIDE = 1000  # samples between candidate silence cuts (the reference's 1/16 s)
SILENCE_SHARE = 0.1
UNKNOWN_SHARE = 0.1
COMMANDS = GSC35[:10]  # yes no up down left right on off stop go
GSC_ORDER = GSC35  # the class order of the reference's 30 (v1) and 35 (v2) class checkpoints


class TreeError(ValueError):
    """The input tree is not a usable GSC-layout tree (missing list, empty class, bad clip)."""


@dataclass
class Tree:
    """What a GSC-layout tree holds: clips per word and split, noise files."""

    root: Path
    words: dict[str, list[Path]]  # word -> sorted clip paths
    split_of: dict[Path, str]  # clip -> train/valid/test
    noise_files: list[Path] = field(default_factory=list)


def speaker_of(path: Path) -> str:
    """Speaker id from a GSC file name: the part before '_nohash_' (else before the first '_')."""
    stem = path.stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem.split("_")[0]


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise TreeError(
            f"{path} is missing: {root} is not a complete GSC-layout tree; re-extract the archive "
            "(or run 'kwsdeploy data prepare-fsdd') so that it has validation_list.txt and testing_list.txt."
        )
    return {ln.strip().replace("\\", "/") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()}


def scan_tree(root: Path, check_headers: bool = True) -> Tree:
    """Index a GSC-layout tree; with `check_headers` every clip must be a readable 16 kHz mono WAV."""
    root = Path(root)
    if not root.is_dir():
        raise TreeError(f"{root} is not a directory: pass an extracted GSC-layout tree.")
    valid, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    words: dict[str, list[Path]] = {}
    split_of: dict[Path, str] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.startswith((".", "_")) or d.name == "silence" or (d / "prepared.json").exists():
            continue  # hidden, noise, the reference's silence output, or a prepared set
        clips = sorted(p for p in d.iterdir() if p.suffix in AUDIO_SUFFIXES)
        if not clips:
            raise TreeError(f"class '{d.name}' is empty: {d} has no .wav files; restore it from the archive or remove the folder.")
        words[d.name] = clips
        for c in clips:
            rel = f"{d.name}/{c.name}"
            split_of[c] = "valid" if rel in valid else "test" if rel in test else "train"
            if check_headers:
                check_clip_header(c)
    if not words:
        raise TreeError(f"{root} has no word folders with .wav files: pass an extracted GSC-layout tree.")
    listed = {f"{c.parent.name}/{c.name}" for c in split_of}
    missing = len((valid | test) - listed)
    if missing:
        log.warning("%d files named in the list files of %s are not in the tree", missing, root)
    noise_dir = root / NOISE_DIR
    noise = sorted(p for p in noise_dir.iterdir() if p.suffix in AUDIO_SUFFIXES) if noise_dir.is_dir() else []
    tree = Tree(root=root, words=words, split_of=split_of, noise_files=noise)
    _check_speakers_disjoint(tree)
    return tree


def _check_speakers_disjoint(tree: Tree) -> None:
    seen: dict[str, str] = {}
    crossing = set()
    for clip, split in tree.split_of.items():
        spk = speaker_of(clip)
        if seen.setdefault(spk, split) != split:
            crossing.add(spk)
    if crossing:
        log.warning("%d speakers appear in more than one split of %s (e.g. %s): the list files are not speaker-disjoint",
                    len(crossing), tree.root, sorted(crossing)[0])


def share_count(share: float, n: int) -> int:
    """ceil(share * n) without float noise (0.1 * 90 is 9.000000000000002 in floats)."""
    return math.ceil(round(share * n, 6))


def class_order(words: list[str]) -> list[str]:
    """The reference's class order for the GSC words present, then any other words sorted."""
    known = [w for w in GSC_ORDER if w in words]
    return known + sorted(w for w in words if w not in GSC_ORDER)


def _entry(tree: Tree, clip: Path, label: str, rel_base: Path) -> dict:
    rel = Path(os.path.relpath(os.path.abspath(clip), os.path.abspath(rel_base))).as_posix()
    return {"path": rel, "label": label, "speaker": speaker_of(clip)}


def silence_candidates(tree: Tree) -> list[tuple[Path, int]]:
    """Every (noise file, offset) 1 s cut at the reference's stride whose audio is not all zeros."""
    out = []
    for f in tree.noise_files:
        x = read_noise(f)
        for off in range(0, len(x) - CLIP_SAMPLES + 1, SILENCE_STRIDE):
            if np.any(x[off: off + CLIP_SAMPLES]):
                out.append((f, off))
    return out


def merge_training_trees(tree: Tree, extra: list[Tree]) -> Tree:
    """`tree` plus every clip of the `extra` trees as training clips (their lists are ignored)."""
    if not extra:
        return tree
    words = {w: list(c) for w, c in tree.words.items()}
    split_of = dict(tree.split_of)
    for t in extra:
        for w, clips in t.words.items():
            words.setdefault(w, []).extend(clips)
            split_of.update({c: "train" for c in clips})
    return Tree(root=tree.root, words={w: sorted(c) for w, c in words.items()}, split_of=split_of,
                noise_files=list(tree.noise_files))


def make_splits(
    tree: Tree,
    keywords: list[str] | None,
    rel_base: Path,
    rebalance: bool = False,
    seed: int = 0,
    unknown_share: float = UNKNOWN_SHARE,
    negatives: list[Path] | None = None,
) -> tuple[list[str], dict[str, list[dict]]]:
    """Labels and per-split entries. `keywords=None` means every word is a class ('all').

    With keywords, `_unknown_` takes up to `unknown_share` x the speech clips of each split from the
    other words, plus every clip of `negatives` (the user's own non-keyword recordings) in train."""
    if keywords is None:
        labels = class_order(list(tree.words))
        others: list[str] = []
    else:
        missing = [k for k in keywords if k not in tree.words]
        if missing:
            words = sorted(tree.words)
            shown = ", ".join(words[:12]) + (", ..." if len(words) > 12 else "")
            raise TreeError(f"keyword '{missing[0]}' has no clips in {tree.root} (words there: {shown}): "
                            "choose keywords from the tree.")
        labels = list(keywords)
        others = [w for w in sorted(tree.words) if w not in keywords]
    if not 0 <= unknown_share <= 10:
        raise ValueError(f"--unknown-share must be between 0 and 10 (a multiple of the speech clips), got {unknown_share}.")
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    unknown_pool: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for word in labels:
        for clip in tree.words[word]:
            splits[tree.split_of[clip]].append(_entry(tree, clip, word, rel_base))
    for word in others:
        for clip in tree.words[word]:
            unknown_pool[tree.split_of[clip]].append(clip)
    for word in labels:
        if not any(e["label"] == word for e in splits["train"]):
            raise TreeError(f"class '{word}' has no training clips in {tree.root}: every clip of it is in the "
                            "validation or testing list; fix the lists or drop the class.")
        for split in ("valid", "test"):
            if not any(e["label"] == word for e in splits[split]):
                log.warning("class '%s' has no %s clips in %s", word, split, tree.root)
    if keywords is not None:
        speech_counts = {s: len(splits[s]) for s in SPLITS}
        if others or negatives:
            labels.append(UNKNOWN)
            rng = np.random.default_rng([seed, 1])
            for split in SPLITS:
                pool = unknown_pool[split]
                n = min(len(pool), share_count(unknown_share, speech_counts[split]))
                for i in sorted(rng.permutation(len(pool))[:n]) if pool else []:
                    splits[split].append(_entry(tree, pool[i], UNKNOWN, rel_base))
            for clip in negatives or []:
                splits["train"].append(_entry(tree, clip, UNKNOWN, rel_base))
        else:
            log.warning("no words besides the keywords in %s: the '%s' class is skipped", tree.root, UNKNOWN)
        labels.append(SILENCE)
        _add_silence(tree, splits, speech_counts, rel_base, seed)
    if rebalance:
        _rebalance(labels, splits, seed)
    return labels, splits


def _add_silence(tree: Tree, splits: dict[str, list[dict]], counts: dict[str, int], rel_base: Path, seed: int) -> None:
    if not tree.noise_files:
        raise TreeError(f"{tree.root / NOISE_DIR} has no .wav files: silence is cut from background noise; "
                        "restore _background_noise_ from the archive (prepare-fsdd writes one).")
    cands = silence_candidates(tree)
    if not cands:
        raise TreeError(f"the noise files in {tree.root / NOISE_DIR} are all shorter than 1 s or silent: add real noise recordings.")
    rng = np.random.default_rng([seed, 2])
    order = rng.permutation(len(cands))
    need = {s: share_count(SILENCE_SHARE, counts[s]) for s in SPLITS}
    if sum(need.values()) > len(cands):
        log.warning("only %d distinct 1 s noise cuts for %d silence clips: some cuts are reused", len(cands), sum(need.values()))
    pos = 0
    for split in SPLITS:
        gains = rng.uniform(0.0, 1.0, size=need[split])
        for k in range(need[split]):
            f, off = cands[order[pos % len(cands)]]
            pos += 1
            e = _entry(tree, f, SILENCE, rel_base)
            e.update(speaker=None, offset=int(off), gain=round(float(gains[k]), 6))
            splits[split].append(e)


def _rebalance(labels: list[str], splits: dict[str, list[dict]], seed: int) -> None:
    """Oversample each training class (with replacement, seeded) up to the largest class."""
    by_label = {lab: [e for e in splits["train"] if e["label"] == lab] for lab in labels}
    target = max(len(v) for v in by_label.values())
    rng = np.random.default_rng([seed, 3])
    train: list[dict] = []
    for lab in labels:
        items = by_label[lab]
        extra = rng.choice(len(items), target - len(items), replace=True) if len(items) < target else []
        train.extend(items + [dict(items[i]) for i in extra])
    splits["train"] = train
