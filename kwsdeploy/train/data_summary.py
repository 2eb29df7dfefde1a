"""What a checkpoint's card says about the data it was trained on: the prepared directory, its labels
and split sizes, its corpus and the extra training trees (a synthetic tree says SYNTHETIC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def data_summary(data_dir, labels: Sequence[str], train_clips: int, valid_clips: int) -> dict[str, Any]:
    """The card's `training.data` of a run on prepared directory `data_dir`."""
    return {"dir": Path(data_dir).name, "labels": labels, "train_clips": train_clips, "valid_clips": valid_clips,
            **data_sources(data_dir)}


def data_sources(data_dir) -> dict[str, Any]:
    """Where a prepared set's clips came from: its corpus, and the extra training trees, each with its
    name and source (a synthetic tree says SYNTHETIC in its source)."""
    from kwsdeploy.data.prepared import audio_root, load_meta

    try:
        meta = load_meta(data_dir)
    except ValueError:
        return {}
    out: dict[str, Any] = {"corpus": meta.get("corpus")}
    extra = []
    for rel in meta.get("extra_train", []):
        marker = audio_root(data_dir, meta) / rel / "kwsdeploy_corpus.json"
        info = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
        extra.append({"name": info.get("name", Path(rel).name), "source": info.get("source", "unknown"),
                      "voices": len(info.get("voices", [])) or None})
    if extra:
        out["extra_train"] = extra
        out["synthetic"] = any("SYNTHETIC" in str(e["source"]).upper() for e in extra)
    return out
