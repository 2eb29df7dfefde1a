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
from kwsdeploy.trt.versions import TrtVersion

INSTALL_HINT = ("install TensorRT's Python package (pip install 'kwsdeploy[trt]' on an x86-64 machine with an "
                "NVIDIA GPU; on a Jetson use JetPack's python3-libnvinfer)")


class TensorRTMissing(RuntimeError):
    """TensorRT (or cuda-python) is not importable here."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or the build failed; the message carries TensorRT's own errors."""


def import_tensorrt():
    """The `tensorrt` module, or TensorRTMissing naming what to install."""
    try:
        import tensorrt
    except ImportError:
        raise TensorRTMissing(f"TensorRT is not installed here: {INSTALL_HINT}.") from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime API module (new layout `cuda.bindings.runtime`, older `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise TensorRTMissing("cuda-python is not installed here: pip install 'kwsdeploy[trt]' "
                                  "(it brings cuda-python for device buffers).") from None
    return cudart


def cuda_check(result):
    """Unpack a cuda-python call's (error, *values); raise on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


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
    cache_path = Path(timing_cache) if timing_cache else None
    t0 = time.perf_counter()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flags(int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((root / plan.onnx).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {plan.onnx}: {errors[:600]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build {plan.onnx} ({precision}); "
                               "rerun with a larger --workspace or see TensorRT's log above.")
    data = bytes(serialized)
    seconds = time.perf_counter() - t0
    write_file(out, data, overwrite=overwrite, option="--out")
    if cache_path is not None:
        write_file(cache_path, bytes(config.get_timing_cache().serialize()), overwrite=True, option="--timing-cache")
    facts = engine_facts(plan, trt.__version__, gpu_facts(), shapes, workspace_mb, data, seconds)
    return EngineBuild(out, cache_path, plan, facts)
