"""The TensorRT runner's buffer plan as pure data: two state sets swapped, addresses per step parity."""

from __future__ import annotations

import pytest

from kwsdeploy.trt.buffers import BufferPlanError, IoTensor, buffer_plan, state_key

ENGINE = [
    IoTensor("features", True, (-1, 40, 8), "float32"),
    IoTensor("state.stem.conv", True, (-1, 40, 2), "float32"),
    IoTensor("state.pool.pool", True, (-1, 48, 12), "float16"),
    IoTensor("logits", False, (-1, 12), "float32"),
    IoTensor("new_state.stem.conv", False, (-1, 40, 2), "float32"),
    IoTensor("new_state.pool.pool", False, (-1, 48, 12), "float16"),
]


def test_plan_sizes_and_allocations_at_batch_4():
    plan = buffer_plan(ENGINE, batch=4)
    assert plan.input.shape == (4, 40, 8) and plan.logits.shape == (4, 12)
    assert [s.name for s in plan.states] == ["state.stem.conv", "state.pool.pool"]
    alloc = dict(plan.allocations())
    assert alloc == {"input": 4 * 40 * 8 * 4, "logits": 4 * 12 * 4,
                     "state.stem.conv@0": 4 * 40 * 2 * 4, "state.pool.pool@0": 4 * 48 * 12 * 2,
                     "state.stem.conv@1": 4 * 40 * 2 * 4, "state.pool.pool@1": 4 * 48 * 12 * 2}
    assert plan.total_bytes == sum(alloc.values()) == 5120 + 192 + 2 * (1280 + 4608)
    assert plan.states[1].row_bytes == 48 * 12 * 2
    assert plan.input_shapes() == {"features": (4, 40, 8), "state.stem.conv": (4, 40, 2), "state.pool.pool": (4, 48, 12)}


def test_each_step_reads_one_set_and_writes_the_other():
    plan = buffer_plan(ENGINE, batch=1)
    b0, b1 = plan.bindings(0), plan.bindings(1)
    assert b0["state.stem.conv"] == b1["new_state.stem.conv"] == state_key("state.stem.conv", 0)
    assert b0["new_state.stem.conv"] == b1["state.stem.conv"] == state_key("state.stem.conv", 1)
    assert b0["features"] == b1["features"] == "input" and b0["logits"] == b1["logits"] == "logits"
    ptrs = {key: 1000 * (i + 1) for i, (key, _) in enumerate(plan.allocations())}
    a0, a1 = plan.addresses(ptrs, 0), plan.addresses(ptrs, 1)
    assert len(a0) == 6 and a0["state.pool.pool"] == a1["new_state.pool.pool"] == ptrs["state.pool.pool@0"]
    assert len({a0[n] for n in a0}) == 6  # no two tensors of one step share a buffer
    with pytest.raises(ValueError, match="parity"):
        plan.bindings(2)


@pytest.mark.parametrize("tensors, message", [
    (ENGINE[1:], "one data input"),
    ([t for t in ENGINE if t.name != "logits"], "outputs 'logits'"),
    ([t for t in ENGINE if t.name != "new_state.pool.pool"], "has no 'new_state.pool.pool' output"),
    ([*ENGINE[:5], IoTensor("new_state.pool.pool", False, (-1, 48, 12), "float32")], "cannot be swapped"),
    ([*ENGINE, IoTensor("debug", False, (-1, 3), "float32")], "not part of the step contract"),
    ([IoTensor("features", True, (-1, 40, -1), "float32"), *ENGINE[1:]], "only the batch axis may be dynamic"),
])
def test_engines_outside_the_step_contract_are_refused(tensors, message):
    with pytest.raises(BufferPlanError, match=message):
        buffer_plan(tensors, batch=2)


def test_fixed_batch_engine_and_bad_batch():
    fixed = [IoTensor(t.name, t.is_input, (2, *t.shape[1:]), t.dtype) for t in ENGINE]
    assert buffer_plan(fixed, batch=2).input.shape == (2, 40, 8)
    with pytest.raises(BufferPlanError, match="fixed batch of 2"):
        buffer_plan(fixed, batch=3)
    with pytest.raises(BufferPlanError, match="whole number"):
        buffer_plan(ENGINE, batch=0)
