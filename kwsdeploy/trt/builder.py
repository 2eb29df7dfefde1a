"""Engine build with TensorRT's Python API, kept thin: everything decided in `plan` (pure), here only
the calls (OnnxParser, one optimization profile, set_memory_pool_limit, timing cache,
build_serialized_network) and atomic writes. TensorRT is imported lazily.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwsdeploy.trt import plan as tp
from kwsdeploy.trt.lazy import TensorRTMissing, cuda_check, import_cudart, import_tensorrt  # noqa: F401 (re-exported)
from kwsdeploy.trt.versions import TrtVersion


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or the build failed; the message carries TensorRT's own errors."""


def gpu_facts(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a GPU (through cuda-python)."""
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


@dataclass(frozen=True)
class EngineBuild:
    """A built engine: where it went and the facts a manifest records about it."""

    engine: Path
    timing_cache: Path | None
    plan: tp.BuildPlan
    facts: dict[str, Any]


def engine_facts(plan: tp.BuildPlan, trt_version: str, gpu: dict[str, Any], shapes, workspace_mb: int,
                 engine_bytes: bytes, seconds: float) -> dict[str, Any]:
    """What the manifest records about an engine (pure; the sha256 is of the serialized engine)."""
    from kwsdeploy.manifest import sha256_bytes

    return {
        "tensorrt": trt_version,
        "gpu": gpu.get("gpu", ""),
        "compute_capability": gpu.get("compute_capability", ""),
        "precision": plan.precision,
        "source": plan.onnx,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "profile": {name: [list(s) for s in mmo] for name, mmo in shapes.items()},
        "workspace_mb": int(workspace_mb),
        "sha256": sha256_bytes(engine_bytes),
        "size": len(engine_bytes),
        "build_seconds": round(float(seconds), 3),
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def serialize_network(trt, onnx_bytes: bytes, plan: tp.BuildPlan, shapes, workspace_mb: int,
                      cache_bytes: bytes = b"", name: str = "graph") -> tuple[bytes, bytes]:
    """The TensorRT calls of one build: (serialized engine, serialized timing cache)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flags(int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {name}: {errors[:600]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for tensor, (lo, opt, hi) in shapes.items():
        profile.set_shape(tensor, lo, opt, hi)
    config.add_optimization_profile(profile)
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build {name} ({plan.precision}); "
                               "rerun with a larger --workspace or see TensorRT's log above.")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


def build_engine(
    bundle_dir: str | Path,
    precision: str = "fp32",
    max_batch: int = 1,
    opt_batch: int | None = None,
    workspace_mb: int = tp.DEFAULT_WORKSPACE_MB,
    timing_cache: str | Path | None = None,
    out: str | Path | None = None,
    input_kind: str | None = None,
    overwrite: bool = False,
) -> EngineBuild:
    """Build and write (atomically) the engine of a bundle's step graph with the installed TensorRT."""
    import time

    from kwsdeploy.atomic import write_file
    from kwsdeploy.manifest import Manifest

    trt = import_tensorrt()
    version = TrtVersion.parse(trt.__version__)
    root = Path(bundle_dir)
    manifest = Manifest.read(root)
    manifest.verify_hashes(root)
    plan = tp.build_plan(manifest, precision, version, input_kind)
    mf = next(f for f in manifest.files if f.path == plan.onnx)
    shapes = tp.profile_shapes(mf.inputs, max_batch, opt_batch)
    out = Path(out) if out else root / tp.engine_file_name(precision, version)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or choose another --out.")
    cache_path = Path(timing_cache) if timing_cache else None
    t0 = time.perf_counter()
    cache_in = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    data, cache_out = serialize_network(trt, (root / plan.onnx).read_bytes(), plan, shapes, workspace_mb, cache_in,
                                        plan.onnx)
    seconds = time.perf_counter() - t0
    write_file(out, data, overwrite=overwrite, option="--out")
    if cache_path is not None:
        write_file(cache_path, cache_out, overwrite=True, option="--timing-cache")
    facts = engine_facts(plan, trt.__version__, gpu_facts(), shapes, workspace_mb, data, seconds)
    return EngineBuild(out, cache_path, plan, facts)


def graph_inputs(onnx_path: str | Path) -> list:
    """The (name, shape) of a bare ONNX graph's inputs, symbolic axes by name ('batch')."""
    from types import SimpleNamespace

    from kwsdeploy.trt.compat import load_graph

    proto = load_graph(onnx_path)
    inits = {t.name for t in proto.graph.initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        out.append(SimpleNamespace(name=vi.name, shape=tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                                               for d in dims)))
    return out


def build_in_memory(onnx_path: str | Path, precision: str = "fp32", max_batch: int = 1,
                    workspace_mb: int = tp.DEFAULT_WORKSPACE_MB) -> bytes:
    """An engine for a bare step graph (no bundle; e.g. a benchmark's temporary graph), not written anywhere.
    The graph is taken to be of `precision` (an fp16 graph, a Q/DQ graph)."""
    from types import SimpleNamespace

    trt = import_tensorrt()
    path = Path(onnx_path)
    inputs = graph_inputs(path)
    files = [SimpleNamespace(mode="step", precision=p, path=path.name, input_kind=None, inputs=inputs)
             for p in dict.fromkeys((precision, "fp32"))]
    plan = tp.build_plan(SimpleNamespace(files=files), precision, trt.__version__)
    shapes = tp.profile_shapes(inputs, max_batch)
    return serialize_network(trt, path.read_bytes(), plan, shapes, workspace_mb, name=path.name)[0]
