"""Background noise of a prepared tree (GSC's `_background_noise_` layout), for long test recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _roots(data: Path) -> list[Path]:
    """The prepared dir, its audio root (prepared.json's audio_root, if any), and two parents."""
    roots = [data]
    if (data / "prepared.json").is_file():
        from kwsdeploy.data.prepared import PreparedError, audio_root

        try:
            roots.append(audio_root(data))
        except (PreparedError, ValueError, OSError):
            pass
    return roots + list(data.parents[:2])


def background_noise(data: Path) -> np.ndarray | None:
    """The first background-noise recording under the prepared tree, its audio root or its data root, if any."""
    from kwsdeploy.audio import load_audio

    for root in _roots(Path(data)):
        folder = root / "_background_noise_"
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in (".wav", ".flac"):
                    return load_audio(f)[0]
    return None
