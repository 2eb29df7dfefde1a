"""A runner is not thread-safe and says so; one runner per thread, or one batch runner, gives each
stream exactly what it would get alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from kwsdeploy.runtime.base import ConcurrentUseError
from kwsdeploy.runtime.runners import open_runner


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, reference_dir, tiny_steps) -> Path:
    return tiny_steps.export_tiny(tmp_path_factory.mktemp("thr") / "bundle", np.load(reference_dir / "features.npy")[:2],
                                  [str(i) for i in range(12)], modes=("step",))[1]


def _streams(n: int, runner) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shape = runner.packet_shape[1:-1]
    return [rng.standard_normal((1, *shape, 40 * runner.packet_shape[-1])).astype(np.float32) for _ in range(n)]


def test_a_second_thread_inside_a_call_is_refused_not_interleaved(bundle):
    run = open_runner(bundle)
    run._busy.acquire()  # another thread is in the middle of a call
    try:
        with pytest.raises(ConcurrentUseError, match="not thread-safe; give each thread its own runner"):
            run.step(np.zeros(run.packet_shape, dtype=np.float32))
        with pytest.raises(ConcurrentUseError):
            run.run(np.zeros(run.packet_shape, dtype=np.float32))
    finally:
        run._busy.release()
    assert np.isfinite(run.step(np.zeros(run.packet_shape, dtype=np.float32))).all()


def test_one_runner_per_thread_gives_each_stream_what_it_gets_alone(bundle):
    solo = open_runner(bundle)
    xs = _streams(6, solo)
    alone = [solo.run(x) for x in xs]
    got: list = [None] * len(xs)

    def work(i):
        r = open_runner(bundle, threads=1)
        for _ in range(3):  # several passes so the threads overlap
            got[i] = r.run(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, g) for a, g in zip(alone, got))


def test_one_batch_runner_serves_many_streams_as_rows(bundle):
    solo = open_runner(bundle)
    xs = _streams(4, solo)
    alone = [solo.run(x)[:, 0] for x in xs]
    batch = open_runner(bundle, batch=4)
    together = batch.run(np.concatenate(xs))
    for i, a in enumerate(alone):
        assert float(np.abs(together[:, i] - a).max()) <= 1e-5
    batch.reset(stream=2)  # one stream restarts, the others go on
    assert np.abs(batch.state()[next(iter(batch.state()))][2]).max() == 0.0
