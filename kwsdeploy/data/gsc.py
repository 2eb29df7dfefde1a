"""`prepare-gsc`: find (or download and extract) a GSC-layout tree and write a prepared directory.

Where the tree comes from, in order: `source`; `data_root` itself when it holds the list files;
`<data_root>/speech_commands_v0.0N/`; `archive`; `<data_root>/speech_commands_v0.0N.tar.gz`;
a download of the official archive (size and sha256 checked). The prepared directory is
`<data_root>/<corpus>_<tag>[_rebalanced]`, where the tag says the split and its class count
(`gsc_v2_all35`, `gsc_v2_sub12`, `fsdd_kw11_zero-...`): the reference said `gsc_vN_35` for all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

from kwsdeploy.atomic import PREPARED, check_output_dir
from kwsdeploy.data import download as dl
from kwsdeploy.data.archive import extract_archive
from kwsdeploy.data.prepared import CLIP_SAMPLES, SAMPLE_RATE, count_stats, write_prepared
from kwsdeploy.data.splits import (
    COMMANDS, SILENCE_SHARE, UNKNOWN_SHARE, TreeError, make_splits, merge_training_trees, scan_tree,
)  # fmt: skip

log = logging.getLogger("kwsdeploy.data")

CORPUS_MARKER = "kwsdeploy_corpus.json"  # written by prepare-fsdd: names the corpus of a tree


def _is_tree(path: Path) -> bool:
    return (path / "validation_list.txt").is_file() or (path / "testing_list.txt").is_file()


def extracted_name(version: int) -> str:
    """Folder that the official archive of `version` is extracted to, under the data root."""
    return dl.GSC_ARCHIVES[version].filename.removesuffix(".tar.gz")


def resolve_tree(
    data_root: Path,
    version: int = 2,
    source: Optional[Path] = None,
    archive: Optional[Path] = None,
    allow_download: bool = True,
    opener=None,
    progress=None,
) -> Path:
    """Return an extracted GSC-layout tree, extracting or downloading the archive when needed."""
    if version not in dl.GSC_ARCHIVES:
        raise ValueError(f"--data-version must be 1 or 2, got {version}.")
    data_root = Path(data_root)
    if source is not None:
        if not Path(source).is_dir():
            raise FileNotFoundError(f"--source {source} is not a directory: pass an extracted GSC-layout tree.")
        return Path(source)
    if _is_tree(data_root):
        return data_root
    target = data_root / extracted_name(version)
    if _is_tree(target):
        return target
    if target.exists():
        raise TreeError(f"{target} exists but has no validation_list.txt / testing_list.txt: remove it and run again to re-extract.")
    info = dl.GSC_ARCHIVES[version]
    if archive is None:
        archive = data_root / info.filename
        if not archive.exists():
            if not allow_download:
                raise FileNotFoundError(f"no GSC tree or archive under {data_root}: pass --archive PATH or allow the download.")
            log.info("downloading %s to %s", info.url, archive)
            archive = dl.download(info.url, archive, info.size, info.sha256, opener=opener, progress=progress)
        else:
            dl.verify_file(archive, info.size, info.sha256)
    else:
        check_release(Path(archive), version)
    log.info("extracting %s to %s", archive, target)
    return extract_archive(Path(archive), target)


def check_release(archive: Path, version: int) -> None:
    """An --archive named or sized like an official release is held to that release's size and sha256;
    any other archive is only checked whole (its compressed stream's CRC) when extracted."""
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found: check the path given with --archive.")
    size = archive.stat().st_size
    for v, info in dl.GSC_ARCHIVES.items():
        if archive.name == info.filename or size == info.size:
            if v != version:
                raise ValueError(f"--archive {archive} is the GSC v{v} release but --data-version is {version}: "
                                 f"pass --data-version {v}.")
            log.info("checking %s against the published size and sha256 of GSC v%d", archive, v)
            dl.verify_file(archive, info.size, info.sha256)
            return
    log.warning("%s is not an official GSC release archive: no published sha256 to check it against "
                "(its compressed stream is still checked whole before use)", archive)


def output_name(corpus: str, class_split: str, labels: list[str], keywords: Optional[list[str]], rebalance: bool) -> str:
    """Folder name of a prepared set: corpus, split tag, rebalance flag."""
    if keywords is None:
        tag = f"all{len(labels)}"
    elif class_split == "sub":
        tag = f"sub{len(labels)}"
    else:
        joined = "-".join(keywords)
        if len(joined) > 64:
            joined = f"{len(keywords)}words-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
        tag = f"kw{len(labels)}_{joined}"
    return f"{corpus}_{tag}" + ("_rebalanced" if rebalance else "")


def _corpus_name(tree: Path, version: int) -> str:
    marker = tree / CORPUS_MARKER
    if marker.is_file():
        return str(json.loads(marker.read_text(encoding="utf-8")).get("name", f"gsc_v{version}"))
    return f"gsc_v{version}"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def prepare_gsc(
    data_root: Path,
    data_version: int = 2,
    class_split: str = "all",
    rebalance: bool = False,
    keywords: Optional[list[str]] = None,
    archive: Optional[Path] = None,
    source: Optional[Path] = None,
    out: Optional[Path] = None,
    seed: int = 0,
    allow_download: bool = True,
    opener=None,
    progress=None,
    check_headers: bool = True,
    overwrite: bool = False,
    extra_train: Optional[list[Path]] = None,
    negatives: Optional[Path] = None,
    unknown_share: float = UNKNOWN_SHARE,
) -> Path:
    """Prepare train/valid/test jsonl + labels.json + stats.json for a GSC-layout tree; returns the folder.

    The folder may lie inside the tree or the data root (the default does), never equal to or
    around them; an older prepared folder there is replaced only with `overwrite`.
    `extra_train`: more GSC-layout trees (e.g. `kwsdeploy data synth`) whose every clip trains;
    `negatives`: a folder of the user's own non-keyword recordings (any rate, any length), cut into
    1 s clips that all join `_unknown_` in train (stored in the prepared folder, `negatives/`);
    `unknown_share`: `_unknown_` clips drawn from the other words, as a share of the speech clips."""
    if class_split not in ("all", "sub"):
        raise ValueError(f"--class-split must be 'all' or 'sub', got '{class_split}'.")
    if keywords is not None:
        keywords = [k.strip() for k in keywords if k.strip()]
        if not keywords:
            raise ValueError("--keywords is empty: give a comma-separated list such as yes,no,up.")
        if len(set(keywords)) != len(keywords):
            raise ValueError(f"--keywords has duplicates: {','.join(keywords)}.")
    elif class_split == "sub":
        keywords = list(COMMANDS)
    data_root = Path(data_root)
    inputs = [("--data-root", data_root), ("--source", source), ("--archive", archive)]
    if out is not None:  # before any download or extraction
        check_output_dir(Path(out), PREPARED, overwrite, inputs, allow_inside=True)
    tree_dir = resolve_tree(data_root, data_version, source, archive, allow_download, opener, progress)
    log.info("scanning %s", tree_dir)
    tree = scan_tree(tree_dir, check_headers=check_headers)
    extras = [scan_tree(Path(t), check_headers=check_headers) for t in extra_train or []]
    tree = merge_training_trees(tree, extras)
    if negatives is not None and keywords is None:
        raise ValueError("--negatives needs --keywords (or --class-split sub): they join the _unknown_ class.")
    corpus = _corpus_name(tree_dir, data_version)
    if out is None:  # the name needs the labels; a first pass without negatives gives them
        probe, _ = make_splits(tree, keywords, rel_base=data_root, seed=seed, unknown_share=unknown_share,
                               negatives=[Path("x")] if negatives is not None else None)
        out = data_root / output_name(corpus, class_split, probe, keywords, rebalance)
    out = Path(out)
    inputs.append(("GSC tree", tree_dir))
    inputs += [("--extra-train", Path(t)) for t in extra_train or []] + [("--negatives", negatives)]
    check_output_dir(out, PREPARED, overwrite, inputs, allow_inside=True)
    with tempfile.TemporaryDirectory(prefix="kws-negatives-") as neg_tmp:
        neg_files: dict[str, Path] = {}
        if negatives is not None:
            from kwsdeploy.data.negatives import cut_negatives

            for path in cut_negatives(Path(negatives), Path(neg_tmp)):
                neg_files[f"negatives/{path.name}"] = path
        neg_paths = [out / name for name in neg_files]
        labels, splits = make_splits(tree, keywords, rel_base=data_root, rebalance=rebalance, seed=seed,
                                     unknown_share=unknown_share, negatives=neg_paths or None)
        _write(out, labels, splits, data_root, tree_dir, tree, corpus, class_split, keywords, rebalance, seed,
               data_version, unknown_share, extras, negatives, neg_files, overwrite, inputs)
    return out


def _write(out, labels, splits, data_root, tree_dir, tree, corpus, class_split, keywords, rebalance, seed,
           data_version, unknown_share, extras, negatives, neg_files, overwrite, inputs) -> None:
    split_name = "keywords" if keywords is not None and class_split != "sub" else class_split
    meta = {
        "corpus": corpus,
        "audio_root": _rel(data_root, out),
        "tree": _rel(tree_dir, data_root),
        "noise_files": [_rel(f, data_root) for f in tree.noise_files],
        "class_split": split_name,
        "keywords": keywords,
        "rebalance": rebalance,
        "seed": seed,
        "data_version": data_version if corpus.startswith("gsc") else None,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "silence_share": SILENCE_SHARE if keywords is not None else None,
        "unknown_share": unknown_share if keywords is not None else None,
    }
    if extras:
        meta["extra_train"] = [_rel(t.root, data_root) for t in extras]
    if negatives is not None:
        meta["negatives"] = {"source": str(negatives), "clips": len(neg_files)}
    stats = count_stats(labels, splits)
    write_prepared(out, labels, splits, meta, stats, extra_files=neg_files, overwrite=overwrite, inputs=inputs,
                   allow_inside=True)
    log.info("prepared %s: %s", out, {s: stats[s]["total"] for s in stats})
