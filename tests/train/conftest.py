"""Small real-speech sets for the training tests, cut from the embedded demo corpus and the goldens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def make_tiny_prepared(out: Path, per_label: dict[str, int]) -> Path:
    """A prepared directory whose jsonl lists the first N clips per label of each demo-corpus split
    (audio stays in the package: prepared.json points at it)."""
    from kwsdeploy.data.demo import demo_corpus_dir

    src = demo_corpus_dir()
    out.mkdir(parents=True)
    meta = json.loads((src / "prepared.json").read_text())
    meta["audio_root"] = str(src)
    (out / "prepared.json").write_text(json.dumps(meta))
    (out / "labels.json").write_text((src / "labels.json").read_text())
    for split, n in per_label.items():
        taken: dict[str, int] = {}
        lines = []
        for line in (src / f"{split}.jsonl").read_text().splitlines():
            label = json.loads(line)["label"]
            if taken.get(label, 0) < n:
                taken[label] = taken.get(label, 0) + 1
                lines.append(line)
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """11 labels (zero..nine, _silence_): 2 train, 1 valid, 1 test clip each."""
    return make_tiny_prepared(tmp_path_factory.mktemp("tiny") / "prepared", {"train": 2, "valid": 1, "test": 1})


@pytest.fixture(scope="session")
def golden_clips(reference_dir):
    """The 8 golden clips (digits 0..7, four speakers) as (waveform, label index) pairs."""
    import torch

    from kwsdeploy.audio import fit_clip, load_audio

    files = sorted((reference_dir / "wavs").glob("*.wav"))
    return [(torch.from_numpy(fit_clip(load_audio(f)[0])), i) for i, f in enumerate(files)]
