"""Imported reference models stream windowed, the window recompute reproducing the clip-relative
top_db clamp: streaming a golden clip gives the reference's own logits on it (issue 13 item 5)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kwsdeploy.audio import load_audio
from kwsdeploy.config import FeatureConfig
from kwsdeploy.models import create, load_reference_weights
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.pipeline import stream_logits
from kwsdeploy.tolerances import REFERENCE_E2E_REL_ATOL

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


@pytest.mark.parametrize("name", ["tcresnet8", "bcresnet1", "kwt-1", "kwm-64-12"])
def test_windowed_stream_of_reference_model_reproduces_golden_logits(name):
    model = create(name)
    load_reference_weights(model, torch.load(REF / f"{name}.pt", weights_only=True))
    golden = np.load(REF / f"{name}.logits.npy")
    smodel = to_streaming(model.eval(), feature_config=FeatureConfig.reference(), hop_frames=10)
    assert smodel.stream_spec.mode == "windowed"
    wavs = sorted((REF / "wavs").glob("*.wav"))
    errs = []
    for i, wav in enumerate(wavs[:4]):
        audio, _ = load_audio(wav)
        times, logits = stream_logits(smodel, audio)
        # 16000 samples = 10 hops of 10 frames; the last window holds exactly the clip's 98 frames.
        assert len(logits) == 10 and times[-1] == pytest.approx(1.0)
        errs.append(np.abs(logits[-1] - golden[i]).max())
        assert logits[-1].argmax() == golden[i].argmax()
    # From WAV files, so our MFCC's float32 rounding (<= 1e-2 on values ~400) is part of the error:
    # the end-to-end tolerance applies, as for import-reference + predict.
    assert max(errs) <= REFERENCE_E2E_REL_ATOL * np.abs(golden).max()


def test_reference_frontend_refuses_exact_streaming():
    model = create("kwm-causal-64-4")
    with pytest.raises(ValueError, match="reference frontend"):
        to_streaming(model, mode="exact", feature_config=FeatureConfig.reference())
