"""Torch-free bundle verification: hashes, ONNX metadata, and parity of every graph on the golden
inputs stored in the bundle at export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kwsdeploy.manifest import GOLDEN_NAME, Manifest, ManifestError, ModelFile
from kwsdeploy.runtime.bundle import Bundle, check_identity, load_bundle
from kwsdeploy.runtime.ort import OrtStepRunner, make_session, run_offline


@dataclass(frozen=True)
class FileCheck:
    """Golden parity of one model file in a bundle."""

    path: str
    max_abs: float
    atol: float
    steps: int

    @property
    def ok(self) -> bool:
        """Whether the golden parity error is within the file's tolerance."""
        return bool(self.max_abs <= self.atol)


def run_golden(
    bundle: Bundle, mf: ModelFile, golden: dict[str, np.ndarray], providers: Sequence[str] | None = None
) -> FileCheck:
    """Run one model file on its golden input and compare with the stored torch logits."""
    key = mf.golden or f"{mf.mode}.{mf.input_kind}"
    if f"{key}.input" not in golden or f"{key}.logits" not in golden:
        raise ManifestError(f"{GOLDEN_NAME} has no golden data '{key}' for {mf.path}; re-export the bundle.")
    x, expected = golden[f"{key}.input"], golden[f"{key}.logits"]
    path = bundle.path / mf.path
    if mf.mode == "step":
        runner = OrtStepRunner(path, batch=x.shape[0], providers=providers, threads=1)
        _check_metadata(runner.session, bundle.manifest, mf.path)
        got = runner.run(x)
    else:
        session = make_session(path, providers, threads=1)
        _check_metadata(session, bundle.manifest, mf.path)
        got = run_offline(session, x)
    if got.shape != expected.shape:
        raise ManifestError(
            f"{mf.path}: golden logits have shape {expected.shape}, the graph gave {got.shape}; re-export the bundle."
        )
    err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    return FileCheck(mf.path, err, mf.parity_atol, int(got.shape[0]) if mf.mode == "step" else 1)


def _check_metadata(session, manifest: Manifest, name: str) -> None:
    check_identity(session.get_modelmeta().custom_metadata_map, manifest, name)


def verify_bundle(bundle_dir: str | Path, providers: Sequence[str] | None = None) -> list[FileCheck]:
    """Schema, hashes, ONNX metadata and golden parity of every ONNX file; raises ManifestError on the first
    problem. Engine files are hash-checked only here (they run on their own GPU, not on ONNX Runtime)."""
    bundle = load_bundle(bundle_dir, check_hashes=True)
    golden = bundle.golden()
    checks = []
    for mf in (f for f in bundle.manifest.files if f.format == "onnx"):
        check = run_golden(bundle, mf, golden, providers)
        if not check.ok:
            raise ManifestError(
                f"{mf.path}: golden parity {check.max_abs:.3g} exceeds its tolerance {check.atol:.3g}; "
                "this runtime computes differently from the export. Check the onnxruntime version/provider."
            )
        checks.append(check)
    return checks
