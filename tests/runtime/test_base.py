"""The StepRunner contract on a numpy backend: packet checks, timing, reset, run (no ONNX needed)."""

from __future__ import annotations

import numpy as np
import pytest

from kwsdeploy.runtime.base import PacketError, StepRunner, packet_views, split_packets


class SumRunner(StepRunner):
    """Toy backend: state = running sum of each stream's packets; logits = [sum, packet sum]."""

    def __init__(self, batch: int = 2) -> None:
        super().__init__(batch=batch, input_name="features", packet_shape=(batch, 3, 2), input_dtype=np.float32,
                         logits_shape=(batch, 2), labels=["a", "b"])
        self.total = np.zeros(batch)
        self.calls = 0

    def _step_impl(self, x):
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == self.packet_shape
        self.calls += 1
        s = x.reshape(self.batch, -1).sum(1)
        self.total += s
        return np.stack([self.total, s], axis=1).astype(np.float32)

    def _reset_impl(self, stream):
        if stream is None:
            self.total[:] = 0
        else:
            self.total[stream] = 0

    def _state_impl(self):
        return {"state.sum.total": self.total.copy()}


def test_step_checks_shape_dtype_and_finite_values_before_the_backend():
    r = SumRunner()
    with pytest.raises(PacketError, match=r"shape \[2, 3, 3\], expected \[2, 3, 2\]"):
        r.step(np.zeros((2, 3, 3)))
    with pytest.raises(PacketError, match="NaN or infinity"):
        r.step(np.full((2, 3, 2), np.nan))
    with pytest.raises(PacketError, match="NaN or infinity"):
        r.step(np.full((2, 3, 2), 1e39))  # finite in float64, infinite once cast to float32
    with pytest.raises(PacketError, match="dtype <U1"):
        r.step(np.full((2, 3, 2), "x"))
    assert r.calls == 0  # nothing reached the backend
    out = r.step(np.ones((2, 3, 2), dtype=np.float64))  # castable dtypes are accepted
    assert out.tolist() == [[6.0, 6.0], [6.0, 6.0]] and r.calls == 1


def test_batch_one_may_drop_the_batch_axis():
    r = SumRunner(batch=1)
    assert r.step(np.ones((3, 2))).tolist() == [[6.0, 6.0]]


def test_run_streams_packets_and_keeps_state_unless_reset():
    r = SumRunner()
    x = np.arange(2 * 3 * 7, dtype=np.float32).reshape(2, 3, 7)  # 3 whole packets of 2 frames, 1 frame dropped
    out = r.run(x)
    expected = np.cumsum([x[..., 2 * i:2 * i + 2].reshape(2, -1).sum(1) for i in range(3)], axis=0)
    assert out.shape == (3, 2, 2) and np.array_equal(out[:, :, 0], expected)
    again = r.run(x, reset=False)
    assert np.array_equal(again[:, :, 0], expected + expected[-1])
    r.reset(stream=0)
    assert r.state()["state.sum.total"].tolist() == [0.0, expected[-1, 1] * 2]
    with pytest.raises(ValueError, match="stream index 2 out of range for batch 2"):
        r.reset(stream=2)


def test_timing_records_one_duration_per_backend_call_when_asked():
    r = SumRunner()
    r.step(np.ones((2, 3, 2)))
    assert r.call_seconds == []
    r.time_calls = True
    r.run(np.ones((2, 3, 6)))
    assert len(r.call_seconds) == 3 and all(t >= 0 for t in r.call_seconds)
    r.clear_times()
    assert r.call_seconds == []


def test_step_returns_a_copy_of_the_backend_buffer():
    class Buffered(SumRunner):
        def _step_impl(self, x):
            self.buf = super()._step_impl(x)
            return self.buf

    r = Buffered()
    out = r.step(np.ones((2, 3, 2)))
    r.buf[:] = -1
    assert out.min() == 6.0


def test_packet_helpers_cut_the_last_axis():
    x = np.arange(10).reshape(1, 10)
    assert [p.tolist() for p in packet_views(x, 4)] == [[[0, 1, 2, 3]], [[4, 5, 6, 7]]]
    assert all(p.flags.c_contiguous for p in split_packets(np.arange(20).reshape(2, 10), 3))
