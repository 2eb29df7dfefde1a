"""The ONNX Runtime StepRunner: state kept between calls, batched independent streams, no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kwsdeploy import tolerances
from kwsdeploy.runtime.base import StepRunner, split_packets
from kwsdeploy.runtime.runners import open_runner


@pytest.fixture(scope="module")
def features(reference_dir) -> np.ndarray:
    return np.load(reference_dir / "features.npy")[:3]


@pytest.fixture(scope="module")
def step_and_bundle(tmp_path_factory, features, tiny_steps):
    return tiny_steps.export_tiny(tmp_path_factory.mktemp("rt") / "bundle", features, [str(i) for i in range(12)],
                                  source="reference features")


def _torch_logits(smodel, x):
    from kwsdeploy.exporters.graphs import torch_stream

    return torch_stream(smodel, smodel.init_state(x.shape[0]), x, 1)


def test_step_by_step_keeps_state_and_matches_torch(step_and_bundle, features):
    smodel, path = step_and_bundle
    runner = open_runner(path, batch=3)
    assert isinstance(runner, StepRunner) and runner.labels == [str(i) for i in range(12)]
    assert runner.packet_shape == (3, 40, 1) and runner.input_name == "features" and runner.logits_shape == (3, 12)
    assert runner.spec.packet_frames == 1 and runner.manifest.stream == runner.spec
    got = np.stack([runner.step(p) for p in split_packets(features, 1)])
    err = np.abs(got - _torch_logits(smodel, features)).max()
    assert got.shape == (98, 3, 12) and err <= tolerances.ONNX_PARITY_ATOL
    # State lives in the same two buffers throughout: no per-step reallocation or copies.
    buffers = [id(a) for s in runner._arrays for a in s]
    for vals, arrs in zip(runner._sets, runner._arrays):  # OrtValues share the numpy memory
        assert [v.data_ptr() for v in vals] == [a.ctypes.data for a in arrs]
    runner.step(features[..., :1])
    assert [id(a) for s in runner._arrays for a in s] == buffers
    # reset() brings every stream back to the zero state.
    runner.reset()
    assert all(np.all(v == 0) for v in runner.state().values())
    assert np.abs(runner.step(features[..., :1]) - got[0]).max() == 0.0


def test_batched_streams_are_independent_and_reset_one_row(step_and_bundle, features):
    _, path = step_and_bundle
    batched = open_runner(path, batch=3).run(features)
    single = open_runner(path, batch=1)
    for i in range(3):
        assert np.abs(single.run(features[i:i + 1])[:, 0] - batched[:, i]).max() <= 1e-6
    runner = open_runner(path, batch=3)
    runner.run(features[..., :50])
    runner.reset(stream=1)
    state = runner.state()
    assert np.all(state["state.pool.sum"][1] == 0) and np.any(state["state.pool.sum"][0] != 0)


def test_wrong_packet_shape_is_a_clear_error(step_and_bundle, features):
    runner = open_runner(step_and_bundle[1], batch=2)
    with pytest.raises(ValueError, match=r"shape \[2, 40, 2\], expected \[2, 40, 1\]"):
        runner.step(features[:2, :, :2])
    with pytest.raises(ValueError, match="not available"):
        open_runner(step_and_bundle[1], providers=["NoSuchExecutionProvider"])


def test_runtime_streams_a_bundle_in_a_process_where_torch_cannot_be_imported(step_and_bundle, features, tmp_path):
    path = step_and_bundle[1]
    np.save(tmp_path / "x.npy", features[:2])
    script = textwrap.dedent(f"""
        import sys
        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this process")
        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        from kwsdeploy.runtime.runners import open_runner
        from kwsdeploy.runtime.bundle import load_bundle
        from kwsdeploy.runtime.verify import verify_bundle
        checks = verify_bundle({str(path)!r})
        runner = open_runner({str(path)!r}, batch=2)
        logits = runner.run(np.load({str(tmp_path / 'x.npy')!r}))
        golden = load_bundle({str(path)!r}).golden()["step.features.logits"]
        assert "torch" not in sys.modules
        print(logits.shape, float(np.abs(logits - golden).max()), checks[0].max_abs)
    """)
    try:
        import torch  # noqa: F401  (the blocker must really be what stops it)
    except ImportError:
        pytest.skip("torch itself is missing")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    shape, err, verify_err = out.stdout.split(")")[0] + ")", *map(float, out.stdout.split(")")[1].split())
    assert shape == "(98, 2, 12)"
    assert err <= tolerances.ONNX_PARITY_ATOL and verify_err <= tolerances.ONNX_PARITY_ATOL
