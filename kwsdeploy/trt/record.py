"""Where a built engine's facts (TensorRT version, GPU, compute capability, profile, sha256) are kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def facts_path(engine: str | Path) -> Path:
    """The JSON file beside an engine that holds its facts ('model.fp16.trt10.3.engine.json')."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def record_engine(bundle_dir: str | Path, engine: str | Path, facts: Mapping[str, Any]) -> Path:
    """Write the engine's facts beside it, atomically (the bundle's ONNX files and manifest stay untouched)."""
    from kwsdeploy.atomic import write_file

    data = {"bundle": str(Path(bundle_dir).name), "engine": Path(engine).name, **dict(facts)}
    return write_file(facts_path(engine), json.dumps(data, indent=1) + "\n", overwrite=True, option="--out")


def read_engine_facts(engine: str | Path) -> dict[str, Any] | None:
    """The facts recorded beside an engine, None when there are none."""
    path = facts_path(engine)
    return json.loads(path.read_text()) if path.is_file() else None
