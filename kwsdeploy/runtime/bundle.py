"""Torch-free bundle loading and verification: schema version, file hashes, ONNX metadata, and
parity of every graph on the golden inputs stored in the bundle at export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kwsdeploy.manifest import (
    GOLDEN_NAME,
    ONNX_METADATA_KEY,
    Manifest,
    ManifestError,
    ModelFile,
)


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its manifest (schema checked; hashes checked unless asked not to)."""

    path: Path
    manifest: Manifest

    def golden(self) -> dict[str, np.ndarray]:
        """The golden inputs and torch logits stored at export (keys '<prefix>.input', '<prefix>.logits')."""
        path = self.path / GOLDEN_NAME
        if not path.is_file():
            raise ManifestError(f"{self.path}: no {GOLDEN_NAME}; re-export the bundle.")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def load_bundle(bundle_dir: str | Path, check_hashes: bool = True) -> Bundle:
    """Read a bundle's manifest (a newer schema is refused) and check every file's sha256."""
    path = Path(bundle_dir)
    if not path.is_dir():
        raise ManifestError(f"{bundle_dir}: not a directory; pass the folder written by 'kwsdeploy export'.")
    manifest = Manifest.read(path)
    if check_hashes:
        manifest.verify_hashes(path)
    return Bundle(path=path, manifest=manifest)


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
    from kwsdeploy.runtime.runner import StepSession, make_session

    key = mf.golden or f"{mf.mode}.{mf.input_kind}"
    if f"{key}.input" not in golden or f"{key}.logits" not in golden:
        raise ManifestError(f"{GOLDEN_NAME} has no golden data '{key}' for {mf.path}; re-export the bundle.")
    x, expected = golden[f"{key}.input"], golden[f"{key}.logits"]
    path = bundle.path / mf.path
    if mf.mode == "step":
        sess = StepSession(path, batch=x.shape[0], providers=providers, threads=1)
        _check_metadata(sess.session, bundle.manifest, mf.path)
        got = sess.run(x)
    else:
        session = make_session(path, providers, threads=1)
        _check_metadata(session, bundle.manifest, mf.path)
        got = session.run(["logits"], {session.get_inputs()[0].name: x})[0]
    if got.shape != expected.shape:
        raise ManifestError(
            f"{mf.path}: golden logits have shape {expected.shape}, the graph gave {got.shape}; re-export the bundle."
        )
    err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if got.size else 0.0
    return FileCheck(mf.path, err, mf.parity_atol, int(got.shape[0]) if mf.mode == "step" else 1)


def _check_metadata(session, manifest: Manifest, name: str) -> None:
    meta = session.get_modelmeta().custom_metadata_map
    got = meta.get(ONNX_METADATA_KEY)
    if got != manifest.identity_sha256():
        raise ManifestError(
            f"{name}: its metadata {ONNX_METADATA_KEY}={got!r} does not match this manifest; "
            "the file comes from another export. Re-export the bundle."
        )


def verify_bundle(bundle_dir: str | Path, providers: Sequence[str] | None = None) -> list[FileCheck]:
    """Schema, hashes, ONNX metadata and golden parity of every file; raises ManifestError on the first problem."""
    bundle = load_bundle(bundle_dir, check_hashes=True)
    golden = bundle.golden()
    checks = []
    for mf in bundle.manifest.files:
        check = run_golden(bundle, mf, golden, providers)
        if not check.ok:
            raise ManifestError(
                f"{mf.path}: golden parity {check.max_abs:.3g} exceeds its tolerance {check.atol:.3g}; "
                "this runtime computes differently from the export. Check the onnxruntime version/provider."
            )
        checks.append(check)
    return checks
