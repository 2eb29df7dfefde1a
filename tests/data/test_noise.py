"""background_noise finds the noise of a prepared dir whose audio lies elsewhere (prepared.json's audio_root)."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from kwsdeploy.data.noise import background_noise


def test_noise_is_found_under_the_audio_root(tmp_path):
    tree, prepared = tmp_path / "trees" / "tree", tmp_path / "prep" / "p"
    (tree / "_background_noise_").mkdir(parents=True)
    prepared.mkdir(parents=True)
    x = (np.arange(1600) % 7 / 10.0).astype(np.float32)
    sf.write(tree / "_background_noise_" / "a.wav", x, 16000, subtype="FLOAT")
    assert background_noise(prepared) is None  # no prepared.json: only the dir and its parents are looked at
    (prepared / "prepared.json").write_text(json.dumps({"format": 1, "audio_root": "../../trees/tree"}))
    got = background_noise(prepared)
    assert got is not None and len(got) == 1600 and np.allclose(got, x)
