"""How to build an engine from a bundle, as data: which ONNX file, network typing and builder flags
per precision and TensorRT version, the optimization profile, file names, and the trtexec command
lines that build and time the same engine on a device. Pure functions (no tensorrt, no torch).

Precision per version:
- 10.x before 10.12 (weakly typed): fp32 from the fp32 graph; fp16 from the fp32 graph with the
  FP16 flag (`--fp16`); int8 from the Q/DQ graph with the INT8 flag (`--int8`).
- 10.12 and later (strongly typed: `STRONGLY_TYPED` network flag, `--stronglyTyped` on 10.x; the
  only mode on 11, where the precision flags are gone): each precision from its own graph (the
  fp16 graph, the Q/DQ graph). 10.12-10.x without an fp16 graph fall back to the weak FP16 flag.
- fp32 also clears TF32 (`--noTF32`), so an "fp32" engine computes in fp32 on Ampere and later.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from kwsdeploy.trt.versions import TrtVersion

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 256
TIMING_CACHE_NAME = "timing.cache"
BATCH = "batch"

Shape = tuple[int, ...]


class PlanError(ValueError):
    """The bundle cannot give an engine of that precision for that TensorRT version (the message says why)."""


@dataclass(frozen=True)
class BuildPlan:
    """Everything version-specific about one engine build."""

    version: TrtVersion
    precision: str
    onnx: str  # file inside the bundle
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()  # trt.BuilderFlag names to set
    cleared_flags: tuple[str, ...] = ()  # trt.BuilderFlag names to clear
    trtexec_flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def network_flags(self, strongly_typed_bit: int) -> int:
        """The create_network() flags, given int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)."""
        return (1 << strongly_typed_bit) if self.strongly_typed else 0


def step_file(manifest, precision: str, input_kind: str | None):
    """The manifest's step ONNX file of a precision ('int8': a Q/DQ graph of the TensorRT recipe),
    or None when the bundle has none."""
    for f in manifest.files:
        if f.mode != "step" or getattr(f, "format", "onnx") != "onnx":
            continue
        if input_kind is not None and f.input_kind != input_kind:
            continue
        if precision == "int8":
            if f.precision == "int8" or (f.precision.startswith("int8") and getattr(f, "recipe", "") == "tensorrt"):
                return f
        elif f.precision == precision:
            return f
    return None


def build_plan(manifest, precision: str, version: str | TrtVersion, input_kind: str | None = None) -> BuildPlan:
    """The plan for an engine of `precision` from `manifest`'s step graphs on TensorRT `version`."""
    v = TrtVersion.parse(version)
    if precision not in PRECISIONS:
        raise PlanError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    fp32 = step_file(manifest, "fp32", input_kind)
    own = step_file(manifest, precision, input_kind)
    strong = v.builds_strongly_typed
    typing_flag = ("--stronglyTyped",) if strong and not v.always_strongly_typed else ()
    if precision == "fp32":
        if fp32 is None:
            raise PlanError("the bundle has no fp32 step graph; export it with 'kwsdeploy export --mode step'.")
        return BuildPlan(v, "fp32", fp32.path, strong, (), ("TF32",), (*typing_flag, "--noTF32"))
    if precision == "fp16":
        if strong and own is not None:
            return BuildPlan(v, "fp16", own.path, True, (), (), typing_flag)
        if not v.has_precision_flags:
            raise PlanError(f"TensorRT {v} builds strongly typed only: an fp16 engine needs the bundle's fp16 graph; "
                            "re-export with 'kwsdeploy export --fp16'.")
        if fp32 is None:
            raise PlanError("the bundle has no fp32 step graph to build an fp16 engine from; re-export it.")
        notes = (f"weak typing with the FP16 flag is deprecated from TensorRT 10.12; export with --fp16 to build "
                 "strongly typed",) if strong else ()
        return BuildPlan(v, "fp16", fp32.path, False, ("FP16",), (), ("--fp16",), notes)
    if own is None:
        raise PlanError("the bundle has no INT8 Q/DQ step graph; export it with 'kwsdeploy export --int8' "
                        "(TensorRT recipe: signed INT8, zero point 0) first.")
    if strong:
        return BuildPlan(v, "int8", own.path, True, (), (), typing_flag)
    return BuildPlan(v, "int8", own.path, False, ("INT8",), (), ("--int8",))


# -- shapes ---------------------------------------------------------------------------------------
def profile_shapes(
    inputs: Sequence, max_batch: int = 1, opt_batch: int | None = None
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) per engine input: the batch axis from 1 to `max_batch` (opt: `opt_batch`, default 1),
    every other axis as exported. `inputs`: TensorInfo-likes with `.name` and `.shape` ('batch' on axis 0)."""
    if int(max_batch) != max_batch or max_batch < 1:
        raise PlanError(f"--max-batch must be a whole number >= 1, got {max_batch}.")
    opt = 1 if opt_batch is None else opt_batch
    if int(opt) != opt or not 1 <= opt <= max_batch:
        raise PlanError(f"--opt-batch must be between 1 and --max-batch ({max_batch}), got {opt}.")
    out = {}
    for t in inputs:
        shape = tuple(t.shape)
        if not shape or shape[0] != BATCH or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
            raise PlanError(f"input {t.name!r} has shape {list(shape)}: an engine profile needs the batch "
                            f"('{BATCH}') on axis 0 and fixed sizes elsewhere; run 'kwsdeploy check-trt'.")
        rest = tuple(int(d) for d in shape[1:])
        out[t.name] = ((1, *rest), (int(opt), *rest), (int(max_batch), *rest))
    return out


def at_batch(shapes: Mapping[str, tuple[Shape, Shape, Shape]], batch: int) -> dict[str, Shape]:
    """Concrete shapes of every input at one batch size (within the profile)."""
    out = {}
    for name, (lo, _, hi) in shapes.items():
        if not lo[0] <= batch <= hi[0]:
            raise PlanError(f"batch {batch} is outside the engine's profile [{lo[0]}, {hi[0]}]; rebuild with --max-batch {batch}.")
        out[name] = (batch, *lo[1:])
    return out


def shape_spec(shapes: Mapping[str, Shape]) -> str:
    """trtexec's shape list: 'features:1x40x8,state.stem.conv:1x40x2' (scalars as 'name:')."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


def engine_file_name(precision: str, version: str | TrtVersion) -> str:
    """Default engine name: one file per precision and TensorRT version ('model.fp16.trt10.3.engine')."""
    return f"model.{precision}.trt{TrtVersion.parse(version)}.engine"


# -- trtexec ------------------------------------------------------------------------------------------
def trtexec_build_command(
    plan: BuildPlan,
    shapes: Mapping[str, tuple[Shape, Shape, Shape]],
    onnx_path: str,
    engine_path: str,
    timing_cache: str | None = TIMING_CACHE_NAME,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec argv that builds the engine of `plan` (min/opt/max shapes of every input)."""
    if workspace_mb < 1:
        raise PlanError(f"--workspace must be >= 1 MB, got {workspace_mb}.")
    argv = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if timing_cache:
        argv.append(f"--timingCacheFile={timing_cache}")
    argv += [
        f"--minShapes={shape_spec({n: s[0] for n, s in shapes.items()})}",
        f"--optShapes={shape_spec({n: s[1] for n, s in shapes.items()})}",
        f"--maxShapes={shape_spec({n: s[2] for n, s in shapes.items()})}",
        f"--memPoolSize=workspace:{int(workspace_mb)}M",
        *plan.trtexec_flags,
        "--skipInference",
    ]
    return argv


def trtexec_bench_command(
    engine_path: str,
    shapes: Mapping[str, Shape],
    version: str | TrtVersion,
    iterations: int = 2000,
    warmup_ms: int = 500,
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec argv that times the engine at fixed shapes, host<->device copies included
    (--includeDataTransfers on 11, where they are left out by default), with a CUDA graph and spin wait."""
    v = TrtVersion.parse(version)
    argv = [trtexec, f"--loadEngine={engine_path}", f"--shapes={shape_spec(shapes)}",
            f"--iterations={int(iterations)}", f"--warmUp={int(warmup_ms)}", "--duration=0"]
    if not v.trtexec_times_transfers_by_default:
        argv.append("--includeDataTransfers")
    if not v.trtexec_cuda_graph_by_default:
        argv += ["--useCudaGraph", "--useSpinWait"]
    return argv


def format_command(argv: Sequence[str]) -> str:
    """One shell-quoted command line."""
    return shlex.join(list(argv))
