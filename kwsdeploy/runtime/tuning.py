"""Detection settings of a bundle (its manifest) or a checkpoint (its card): read, or written
atomically; the file hashes, the graphs' identity hash and the weights hash stay valid because the
settings are outside all of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

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


CARD_KEY = "detection"  # a checkpoint card's tuned settings: `stream --checkpoint/--model` and `export` use them


def card_detection(card: Mapping[str, Any]) -> DetectionSettings | None:
    """The detection settings a checkpoint card carries (None: never tuned)."""
    d = card.get(CARD_KEY)
    return DetectionSettings.from_dict(d) if d is not None else None


def write_card_detection(checkpoint_dir: str | Path, settings: DetectionSettings) -> Path:
    """Rewrite `<checkpoint_dir>/card.json` with `settings` (atomically; the weights hash is untouched)."""
    import json

    from kwsdeploy.atomic import write_file

    path = Path(checkpoint_dir) / "card.json"
    if not path.is_file():
        raise ValueError(f"{checkpoint_dir} has no card.json: pass a kwsdeploy checkpoint directory.")
    card = json.loads(path.read_text())
    card[CARD_KEY] = settings.to_dict()
    write_file(path, json.dumps(card, indent=1, sort_keys=False) + "\n")
    return path
