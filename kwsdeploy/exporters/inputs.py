"""What an export starts from: the model and its labels (a checkpoint, the shipped demo checkpoint, or
random weights for testing), and the real clips its graphs are parity-checked on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

PARITY_CLIPS = 4


def parity_clips(feature_config, clips: int = PARITY_CLIPS):
    """Real clips for export-time parity: the demo corpus test split when present, else a
    deterministic synthetic signal (said so in the manifest)."""
    from kwsdeploy.exporters.bundle import ParityData
    from kwsdeploy.features import compute_features

    audio, source = None, ""
    try:
        from kwsdeploy.data.dataset import KwsDataset
        from kwsdeploy.data.demo import demo_corpus_dir

        ds = KwsDataset(demo_corpus_dir(), "test")
        picks = np.linspace(0, len(ds) - 1, clips).round().astype(int)
        audio = np.stack([np.asarray(ds[int(i)][0], dtype=np.float32) for i in picks])
        source = f"demo corpus test split, {clips} clips (indices {picks.tolist()})"
    except (ImportError, FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        t = np.arange(feature_config.clip_samples) / feature_config.sample_rate
        audio = np.stack([
            0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t * (1 + t)) * np.exp(-3 * (t - 0.5) ** 2)
            + 0.01 * rng.standard_normal(t.shape) for i in range(clips)
        ]).astype(np.float32)
        source = f"synthetic chirps, {clips} clips (no demo corpus found)"
    features = compute_features(audio, feature_config).numpy()
    return ParityData(features=features, audio=audio, source=source)


def load_export_model(model: str, checkpoint: Optional[Path], random_init: bool):
    """(model, labels, feature_config, checkpoint info, accuracy, message) for `export`'s choices: a
    checkpoint, the shipped demo checkpoint of `model` (no checkpoint given), or seeded random weights."""
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.models.registry import create, get_card, kws_info

    card = get_card(model)
    if random_init:
        if checkpoint is not None:
            raise ValueError("--random-init and --checkpoint exclude each other; pass one.")
        import torch

        torch.manual_seed(0)
        m = create(card.name).eval()
        labels = [f"class{i}" for i in range(kws_info(m).num_classes)]
        info = {"source": "random-init (seed 0)", "random_init": True}
        return m, labels, FeatureConfig.deployable(card.n_mfcc), info, {}, f"{card.name}: random weights (seed 0), for testing only"
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

    msg = ""
    if checkpoint is None:
        checkpoint = demo_checkpoint_path(card.name)
        msg = f"no --checkpoint given: using the shipped demo checkpoint of {card.name} ({checkpoint})"
    ck = load_checkpoint(checkpoint)
    if get_card(ck.card["model"]).name != card.name:
        raise ValueError(f"--model {card.name} but the checkpoint holds {ck.card['model']!r}; pass the matching --model.")
    info = {
        "source": "demo" if msg else str(Path(checkpoint).name),
        "weights_sha256": ck.card.get("weights_sha256", ""),
        "random_init": False,
    }
    accuracy = {"checkpoint_metrics": ck.card.get("metrics")} if ck.card.get("metrics") else {}
    return ck.model, ck.labels, ck.feature_config, info, accuracy, msg or f"checkpoint {checkpoint}"


def card_detection_of(model: str, checkpoint: Optional[Path]):
    """The tuned detection settings the checkpoint's card carries (None: the defaults go into the manifest)."""
    from kwsdeploy.models.registry import get_card
    from kwsdeploy.runtime.tuning import card_detection
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, read_card

    return card_detection(read_card(checkpoint or demo_checkpoint_path(get_card(model).name)))
