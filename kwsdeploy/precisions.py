"""The precision table: every precision a bundle can hold, as a graph pass plus its named tolerance.

Torch-free (the manifest reads the names from here). `build_bundle` runs `PRECISIONS[name]` for every
requested precision: the pass maps the fp32 model graph (frontend not attached) to that precision's
graph, and the result must match the torch fp32 step form within `atol(frontend)` or nothing is
written. Adding a precision (an INT8 recipe, say) is adding one entry:

    "int8-cpu": Precision("int8-cpu", "kwsdeploy.calibration.qdq:cpu_pass", "INT8_CPU_PARITY_ATOL",
                          suffix=".int8-cpu", recipe="cpu", needs_calibration=True),

A pass is `fn(proto: onnx.ModelProto, ctx: PassContext) -> onnx.ModelProto`, named "module:function"
so this module imports neither onnx nor torch; `ctx` carries what a calibrating pass needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kwsdeploy import tolerances


@dataclass
class PassContext:
    """What a precision pass may use besides the fp32 graph.

    mode: "step" | "offline"; frontend: the MFCC frontend will be attached in front of the result;
    inputs: the parity clips as the full graph takes them; calibration: the caller's calibration
    data (None unless the precision needs it); record: a pass may put its calibration record here
    (it goes into the manifest); options: free-form per-precision options from the caller.
    """

    mode: str
    frontend: bool = False
    inputs: Any = None
    calibration: Any = None
    record: dict[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Precision:
    """One precision: its graph pass, the name of its parity tolerance, its file-name suffix."""

    name: str
    graph_pass: str  # "module:function", or "" for the fp32 graph itself
    tolerance: str  # a constant in kwsdeploy.tolerances
    suffix: str  # model<.offline><suffix>.onnx
    frontend_tolerance: str = ""  # used instead of `tolerance` when the MFCC frontend is in the graph
    recipe: str = ""  # INT8 recipe name (manifest `recipe` of the files it makes)
    needs_calibration: bool = False
    format: str = "onnx"

    def atol(self, frontend: bool = False) -> float:
        """The parity tolerance of this precision's graphs."""
        return float(getattr(tolerances, self.frontend_tolerance if frontend and self.frontend_tolerance else self.tolerance))

    def file_name(self, mode: str) -> str:
        """The bundle file name of this precision's graph for a mode."""
        return "model" + (".offline" if mode == "offline" else "") + self.suffix + ".onnx"

    def pass_fn(self) -> Callable[[Any, PassContext], Any] | None:
        """The graph pass (imported now), or None for fp32."""
        if not self.graph_pass:
            return None
        module, _, fn = self.graph_pass.partition(":")
        return getattr(importlib.import_module(module), fn)


PRECISIONS: dict[str, Precision] = {
    # The frontend-inside fp32 graph keeps a float32 STFT's rounding in quiet mel bands (tolerances.py).
    "fp32": Precision("fp32", "", "ONNX_PARITY_ATOL", "", frontend_tolerance="ONNX_FRONTEND_PARITY_ATOL"),
    # fp16 converts the model only: a frontend stays fp32 in front of it.
    "fp16": Precision("fp16", "kwsdeploy.exporters.onnx:fp16_pass", "ONNX_FP16_PARITY_ATOL", ".fp16"),
    # INT8 recipes (kwsdeploy.calibration): calibrated on the state-aware tuples of real speech.
    "int8-tensorrt": Precision("int8-tensorrt", "kwsdeploy.calibration.passes:tensorrt_pass", "INT8_PARITY_ATOL",
                               ".int8-tensorrt", recipe="tensorrt", needs_calibration=True),
    "int8-cpu": Precision("int8-cpu", "kwsdeploy.calibration.passes:cpu_pass", "INT8_PARITY_ATOL", ".int8-cpu",
                          recipe="cpu", needs_calibration=True),
}


def get_precision(name: str) -> Precision:
    """The table entry for `name`; an unknown name is a one-line ValueError listing the known ones."""
    if name not in PRECISIONS:
        raise ValueError(f"Unknown precision {name!r}; known: {', '.join(PRECISIONS)}.")
    return PRECISIONS[name]
