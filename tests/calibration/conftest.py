"""Fixtures for the calibration tests: shipped demo checkpoints' step graphs and their calibration sets."""

from __future__ import annotations

import numpy as np
import onnx
import pytest


def _step_graph(name: str, frontend: bool = False):
    from kwsdeploy.exporters import onnx as ox
    from kwsdeploy.streaming.convert import to_streaming
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

    ck = load_checkpoint(demo_checkpoint_path(name))
    smodel = to_streaming(ck.model, feature_config=ck.feature_config).eval()
    if frontend:
        from kwsdeploy.streaming.pipeline import make_frontend

        proto = ox.export_step(smodel, frontend=make_frontend(smodel), exporter="legacy")
    else:
        proto = ox.export_step(smodel, exporter="legacy")
    return proto, ck


@pytest.fixture(scope="session")
def tc_graph():
    """tcresnet8-causal demo checkpoint: (fp32 step graph, checkpoint)."""
    return _step_graph("tcresnet8-causal")


@pytest.fixture(scope="session")
def kwm_graph():
    """kwm-causal-64-4 demo checkpoint: (fp32 step graph, checkpoint)."""
    return _step_graph("kwm-causal-64-4")


def calibrate(proto: onnx.ModelProto, ck, clips: int = 16, **kw):
    from kwsdeploy.calibration.data import collect_calibration, load_calibration_clips

    fc = ck.feature_config
    c = load_calibration_clips(None, ck.labels, fc.sample_rate, fc.clip_samples, clips=clips)
    return collect_calibration(proto.SerializeToString(), c, fc, **kw)


@pytest.fixture(scope="session")
def tc_calib(tc_graph):
    return calibrate(*tc_graph)


@pytest.fixture(scope="session")
def kwm_calib(kwm_graph):
    return calibrate(*kwm_graph)


@pytest.fixture(scope="session")
def kwm_int8(kwm_graph, kwm_calib):
    """The tensorrt recipe on the kwm-causal-64-4 step graph (defaults)."""
    from kwsdeploy.calibration.qdq import tensorrt_recipe

    return tensorrt_recipe(kwm_graph[0], kwm_calib)


@pytest.fixture(scope="session")
def test_split():
    """The demo corpus test split (jackson, a speaker no training step saw): audio [110, 16000], labels."""
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir

    ds = KwsDataset(demo_corpus_dir(), "test")
    return np.stack([np.asarray(ds.clip(i), dtype=np.float32) for i in range(len(ds))]), np.array(ds.targets)
