"""Recording a built engine in its bundle: a manifest entry of format `engine` with its facts
(TensorRT version, GPU, compute capability, source graph, profile, flags) and the golden parity
measured on it, hash and size included; the manifest is rewritten atomically. An engine written
outside the bundle gets its facts in a JSON file beside it instead."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

_INFO_KEYS = ("tensorrt", "gpu", "compute_capability", "source")


def facts_path(engine: str | Path) -> Path:
    """The JSON file beside an engine outside its bundle ('m.engine' -> 'm.engine.json')."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def engine_precision(facts: Mapping[str, Any], source_precision: str) -> str:
    """The manifest precision of an engine: fp32/fp16 as built, INT8 as its Q/DQ graph's table entry."""
    from kwsdeploy.precisions import PRECISIONS

    return facts["precision"] if facts["precision"] in PRECISIONS else source_precision


def engine_entry(manifest, engine_name: str, facts: Mapping[str, Any], parity_max_abs: float, parity_atol: float):
    """The ModelFile of an engine: the source graph's I/O, format 'engine', the facts as EngineInfo."""
    from kwsdeploy.manifest import EngineInfo

    source = next(f for f in manifest.files if f.path == facts["source"])
    info = EngineInfo(tensorrt_version=str(facts["tensorrt"]), gpu_name=str(facts["gpu"]),
                      compute_capability=str(facts["compute_capability"]), source=source.path,
                      extra={k: v for k, v in facts.items() if k not in _INFO_KEYS})
    return dataclasses.replace(
        source, path=engine_name, precision=engine_precision(facts, source.precision), format="engine", engine=info,
        parity_max_abs=float(parity_max_abs), parity_atol=float(parity_atol), exporter="tensorrt",
    )


def record_engine(bundle_dir: str | Path, engine: str | Path, facts: Mapping[str, Any],
                  parity_max_abs: float, parity_atol: float) -> Path:
    """Add (or replace) the engine's entry in the bundle's manifest; returns the file written."""
    from kwsdeploy.atomic import write_file
    from kwsdeploy.manifest import MANIFEST_NAME, Manifest, sha256_file

    root, engine = Path(bundle_dir), Path(engine)
    data = {**dict(facts), "parity_max_abs": float(parity_max_abs), "parity_atol": float(parity_atol)}
    if engine.resolve().parent != root.resolve():
        return write_file(facts_path(engine), json.dumps({"bundle": root.name, "engine": engine.name, **data},
                                                         indent=1) + "\n", overwrite=True, option="--out")
    manifest = Manifest.read(root)
    entry = engine_entry(manifest, engine.name, facts, parity_max_abs, parity_atol)
    files = tuple(f for f in manifest.files if f.path != engine.name) + (entry,)
    manifest = dataclasses.replace(
        manifest, files=files, hashes={**manifest.hashes, engine.name: sha256_file(engine)},
        sizes={**manifest.sizes, engine.name: engine.stat().st_size},
    )
    return write_file(root / MANIFEST_NAME, manifest.to_json(), overwrite=True, option="--out")
