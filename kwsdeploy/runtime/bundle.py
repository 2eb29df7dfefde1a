"""Torch-free bundle loading: a bundle directory's manifest (schema checked), file hashes, goldens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kwsdeploy.manifest import GOLDEN_NAME, ONNX_METADATA_KEY, Manifest, ManifestError


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


def check_identity(metadata: dict[str, str], manifest: Manifest, name: str) -> None:
    """Refuse a graph whose stamped identity (ONNX metadata) is not this manifest's: a file swapped in
    from another export would otherwise run under the wrong model name and labels."""
    got = metadata.get(ONNX_METADATA_KEY)
    if got != manifest.identity_sha256():
        raise ManifestError(
            f"{name}: its metadata {ONNX_METADATA_KEY}={got!r} does not match this manifest; "
            "the file comes from another export. Re-export the bundle."
        )
