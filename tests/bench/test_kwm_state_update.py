"""benchmarks/kwm_state_rewrites.py: the graph rewrites of the causal KWM state update that
bench_kwm_state_update.py times compute what the export computes (the small kwm-causal-64-4 step graph, streamed 20 steps from a random state)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_kwm_state_update as bench  # noqa: E402
import kwm_state_rewrites as rewrites  # noqa: E402


@pytest.fixture(scope="module")
def exported():
    return bench.export("kwm-causal-64-4")


def _max_diff(a, b, batch: int) -> float:
    ref = bench.Stepper(a.SerializeToString(), {}, batch).trace()
    got = bench.Stepper(b.SerializeToString(), {}, batch).trace()
    assert len(ref) == len(got)
    return max(float(np.abs(x - y).max()) for x, y in zip(ref, got))


@pytest.mark.parametrize("variant", ["dsplit-4", "dsplitcat-4", "tiled-2x2", "outer-mul"])
def test_every_variant_streams_as_the_export(exported, variant):
    g = rewrites.variant_graph(variant, exported)
    for batch in (1, 5):
        assert _max_diff(exported, g, batch) <= 1e-6


def test_dsplit_binds_each_piece_of_the_state_and_dsplitcat_keeps_the_contract(exported):
    layers = len(rewrites.state_updates(exported.graph))
    names = lambda g: {i.name for i in g.graph.input}  # noqa: E731
    split = rewrites.variant_graph("dsplit-4", exported)
    parts = {n for n in names(split) if rewrites.PART in n}
    assert len(parts) == 4 * layers and all(f"new_{n}" in {o.name for o in split.graph.output} for n in parts)
    assert names(rewrites.variant_graph("dsplitcat-4", exported)) == names(exported)


def test_channels_that_do_not_divide_are_refused(exported):
    with pytest.raises(ValueError, match="do not split into 3 parts"):
        rewrites.variant_graph("dsplit-3", exported)
