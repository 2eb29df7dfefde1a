"""The prepared-dataset format: labels.json, prepared.json, stats.json and one jsonl per split.

A prepared directory holds no audio of its own (except the embedded demo corpus): every jsonl
line names a clip by `path`, relative to `audio_root` (recorded in prepared.json, relative to the
prepared directory). Silence lines name a noise file plus `offset` (samples) and `gain`.
Directories are written to a temp sibling and swapped into place, so a reader never sees half.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from kwsdeploy.atomic import PREPARED, writing_dir
from kwsdeploy.contract import CLIP_SAMPLES, SAMPLE_RATE

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"


class PreparedError(ValueError):
    """A prepared directory is missing, incomplete or inconsistent."""


def dumps_json(obj: Any, sort_keys: bool = True) -> str:
    """Stable JSON text (two-space indent, trailing newline) so reruns are byte-identical."""
    return json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def jsonl_text(entries: Iterable[Mapping[str, Any]]) -> str:
    """One compact JSON object per line, keys sorted."""
    return "".join(json.dumps(dict(e), sort_keys=True, ensure_ascii=False, separators=(", ", ": ")) + "\n" for e in entries)


def write_prepared(
    out: Path,
    labels: list[str],
    splits: Mapping[str, list[dict]],
    meta: Mapping[str, Any],
    stats: Mapping[str, Any],
    extra_files: Mapping[str, Path] | None = None,
    overwrite: bool = False,
    inputs: Iterable[tuple[str, Path | None]] = (),
    allow_inside: bool = False,
) -> Path:
    """Write a prepared directory atomically (temp dir + swap); an older prepared one is replaced
    only with `overwrite`, anything else at `out` never (see `kwsdeploy.atomic`)."""
    out = Path(out)
    with writing_dir(out, PREPARED, overwrite, inputs, allow_inside=allow_inside) as tmp:
        (tmp / "labels.json").write_text(dumps_json(list(labels)), encoding="utf-8")
        (tmp / "prepared.json").write_text(dumps_json({"format": FORMAT_VERSION, **meta}), encoding="utf-8")
        (tmp / "stats.json").write_text(dumps_json(stats, sort_keys=False), encoding="utf-8")
        for split in SPLITS:
            (tmp / f"{split}.jsonl").write_text(jsonl_text(splits.get(split, [])), encoding="utf-8")
        for name, src in (extra_files or {}).items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return out


def read_jsonl(path: Path) -> list[dict]:
    """Parse a jsonl file; a bad line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise PreparedError(f"{path} not found: run 'kwsdeploy data prepare-gsc' (or prepare-fsdd) first.")
    entries = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PreparedError(f"{path}:{i} is not valid JSON ({exc.msg}): prepare the data again.") from None
            if not isinstance(entry, dict) or "path" not in entry or "label" not in entry:
                raise PreparedError(f"{path}:{i} lacks 'path' or 'label': prepare the data again.")
            entries.append(entry)
    return entries


def load_labels(prepared_dir: Path) -> list[str]:
    """The class order of a prepared directory (labels.json)."""
    path = Path(prepared_dir) / "labels.json"
    if not path.is_file():
        raise PreparedError(f"{path} not found: {prepared_dir} is not a prepared dataset; run 'kwsdeploy data prepare-gsc'.")
    labels = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise PreparedError(f"{path} must be a non-empty JSON list of class names: prepare the data again.")
    return labels


def load_meta(prepared_dir: Path) -> dict:
    """prepared.json (format version, audio_root, noise files, how it was made)."""
    path = Path(prepared_dir) / "prepared.json"
    if not path.is_file():
        raise PreparedError(f"{path} not found: {prepared_dir} is not a prepared dataset; run 'kwsdeploy data prepare-gsc'.")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise PreparedError(f"{path} has format {meta.get('format')!r}, this kwsdeploy reads {FORMAT_VERSION}: prepare the data again.")
    return meta


def audio_root(prepared_dir: Path, meta: Mapping[str, Any] | None = None) -> Path:
    """The directory that the jsonl paths are relative to."""
    meta = meta if meta is not None else load_meta(prepared_dir)
    return (Path(prepared_dir) / meta.get("audio_root", ".")).resolve()


def count_stats(labels: list[str], splits: Mapping[str, list[dict]]) -> dict:
    """Per split: clips per class (in label order), total, and distinct speakers."""
    stats: dict[str, Any] = {}
    for split in SPLITS:
        entries = splits.get(split, [])
        per = {lab: 0 for lab in labels}
        for e in entries:
            per[e["label"]] = per.get(e["label"], 0) + 1
        speakers = {e.get("speaker") for e in entries if e.get("speaker")}
        stats[split] = {"classes": per, "total": len(entries), "speakers": len(speakers)}
        if UNKNOWN in labels:  # the share of non-keyword clips, as a fraction of the split
            stats[split]["unknown_share"] = round(per[UNKNOWN] / len(entries), 4) if entries else 0.0
    return stats
