"""The detection settings of a bundle: read from its manifest, or written into it (atomically; the
file hashes and the graphs' identity hash stay valid because `detection` is outside both)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kwsdeploy.contract import DetectionSettings
from kwsdeploy.manifest import MANIFEST_NAME, Manifest


def bundle_detection(manifest: Manifest) -> DetectionSettings:
    """The manifest's detection settings (the defaults when it has none; `tuned` says if tuned)."""
    return manifest.detection_settings


def write_detection(bundle_dir: str | Path, settings: DetectionSettings) -> Manifest:
    """Rewrite `<bundle_dir>/manifest.json` with `settings` (hashes checked before and after)."""
    from kwsdeploy.atomic import write_file
    from kwsdeploy.runtime.bundle import load_bundle

    bundle = load_bundle(bundle_dir, check_hashes=True)
    manifest = dataclasses.replace(bundle.manifest, detection=settings)
    write_file(Path(bundle_dir) / MANIFEST_NAME, manifest.to_json())
    return load_bundle(bundle_dir, check_hashes=True).manifest
