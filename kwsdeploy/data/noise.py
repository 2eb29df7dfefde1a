"""Background noise of a prepared tree (GSC's `_background_noise_` layout), for long test recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def background_noise(data: Path) -> np.ndarray | None:
    """The first background-noise recording under the prepared tree (or its data root), if any."""
    from kwsdeploy.audio import load_audio

    for root in (data, *data.parents[:2]):
        folder = root / "_background_noise_"
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in (".wav", ".flac"):
                    return load_audio(f)[0]
    return None
