"""Open a bundle's step graph with a backend: `open_runner(bundle_dir, ...) -> StepRunner`.

`BACKENDS` maps a backend name to the module and class implementing `StepRunner` (imported only
when asked for, so an optional backend costs nothing until used). A backend class takes
`(model_path, batch=, providers=, threads=, labels=, spec=, manifest=)`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from kwsdeploy.runtime.base import StepRunner
from kwsdeploy.runtime.bundle import check_identity, load_bundle

BACKENDS = {
    "onnxruntime": ("kwsdeploy.runtime.ort", "OrtStepRunner"),
    "tensorrt": ("kwsdeploy.runtime.trt", "TrtStepRunner"),  # the bundle's engine for the installed TensorRT
}


def open_runner(
    bundle_dir: str | Path,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    input_kind: str | None = None,
    batch: int = 1,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    check_hashes: bool = True,
) -> StepRunner:
    """The step runner of a bundle's `precision` file (hashes checked first), with its labels and spec."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown runner backend {backend!r}; choose one of {sorted(BACKENDS)}.")
    bundle = load_bundle(bundle_dir, check_hashes=check_hashes)
    manifest = bundle.manifest
    mf = manifest.file("step", precision, input_kind)
    module, cls = BACKENDS[backend]
    runner_cls = getattr(importlib.import_module(module), cls)
    runner = runner_cls(
        bundle.path / mf.path, batch=batch, providers=providers, threads=threads,
        labels=manifest.labels, spec=manifest.stream, manifest=manifest,
    )
    session = getattr(runner, "session", None)  # ONNX graphs carry the identity stamp; engines do not
    if session is not None and hasattr(session, "get_modelmeta"):
        check_identity(session.get_modelmeta().custom_metadata_map, manifest, mf.path)
    return runner


def resolve_backend(bundle_dir: str | Path, backend: str = "auto", precision: str = "fp32") -> str:
    """'auto' -> 'tensorrt' when TensorRT is installed and the bundle holds an engine for its version,
    else 'onnxruntime'; any other name is checked and returned."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"Unknown runner backend {backend!r}; choose auto or one of {sorted(BACKENDS)}.")
        return backend
    from kwsdeploy.trt.lazy import have_tensorrt

    if not have_tensorrt():
        return "onnxruntime"
    from kwsdeploy.trt.lazy import import_tensorrt
    from kwsdeploy.trt.plan import engine_file_name

    engine = Path(bundle_dir) / engine_file_name(precision, import_tensorrt().__version__)
    return "tensorrt" if engine.is_file() else "onnxruntime"
