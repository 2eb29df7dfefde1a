"""A model imported from the reference exports as a windowed step graph with the frontend inside:
streamed by ONNX Runtime from the golden WAV files, it gives the reference's logits."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kwsdeploy.audio import load_audio
from kwsdeploy.config import FeatureConfig
from kwsdeploy.exporters.bundle import ParityData, export_bundle
from kwsdeploy.models import create, load_reference_weights
from kwsdeploy.runtime.runners import open_runner
from kwsdeploy.tolerances import REFERENCE_E2E_REL_ATOL

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


def _reference_model(name):
    model = create(name)
    load_reference_weights(model, torch.load(REF / f"{name}.pt", weights_only=True))
    return model.eval()


def test_reference_tcresnet8_bundle_streams_golden_logits(tmp_path):
    wavs = sorted((REF / "wavs").glob("*.wav"))[:3]
    audio = np.stack([load_audio(w)[0] for w in wavs])
    golden = np.load(REF / "tcresnet8.logits.npy")[:3]
    fc = FeatureConfig.reference()
    result = export_bundle(
        tmp_path / "b", model=_reference_model("tcresnet8"), labels=[f"c{i}" for i in range(12)],
        feature_config=fc, parity=ParityData(features=None, audio=audio, source="golden wavs"),
        modes=("step",), frontend=True, hop_frames=10, exporter="legacy",
    )
    assert result.manifest.stream.mode == "windowed"
    assert result.manifest.feature_config.log_floor == "clip_top_db"
    runner = open_runner(result.path, batch=3)
    logits = runner.run(audio)  # [packets, batch, classes]; the last window is the whole clip
    assert logits.shape == (10, 3, 12)
    err = np.abs(logits[-1] - golden).max()
    assert err <= REFERENCE_E2E_REL_ATOL * np.abs(golden).max()
    assert (logits[-1].argmax(-1) == golden.argmax(-1)).all()


def test_reference_frontend_step_export_without_frontend_is_refused(tmp_path):
    audio = np.zeros((1, 16000), np.float32)
    with pytest.raises(ValueError, match="--frontend"):
        export_bundle(
            tmp_path / "b", model=_reference_model("tcresnet8"), labels=[f"c{i}" for i in range(12)],
            feature_config=FeatureConfig.reference(), parity=ParityData(features=np.zeros((1, 40, 98), np.float32),
                                                                         audio=audio, source="x"),
            modes=("step",), frontend=False, exporter="legacy",
        )
    assert not (tmp_path / "b").exists()
