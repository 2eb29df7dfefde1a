"""Device-buffer plan of a TensorRT step engine, as pure data: which tensor lives in which buffer,
and the two state sets swapped between steps (step t reads set t%2 and writes the other), so no
state is ever copied. The runner allocates what `allocations()` lists and binds `addresses()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from kwsdeploy.contract import LOGITS, is_state_name, new_state_name

INPUT_KEY = "input"
LOGITS_KEY = "logits"


class BufferPlanError(ValueError):
    """The engine's tensors do not follow the step contract (or the batch is outside its profile)."""


@dataclass(frozen=True)
class IoTensor:
    """One engine I/O tensor as the engine reports it (-1 marks a dynamic axis)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name


@dataclass(frozen=True)
class Slot:
    """One buffer: the concrete shape at the plan's batch and its size."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes of one batch row (one stream)."""
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else 0


@dataclass(frozen=True)
class BufferPlan:
    """The buffers of one engine at one batch size."""

    batch: int
    input: Slot
    logits: Slot
    states: tuple[Slot, ...]  # state inputs, in engine order; new_state.<x> shares shape and dtype

    def allocations(self) -> list[tuple[str, int]]:
        """(key, bytes) of every device buffer: the input, the logits, each state twice (set 0 and 1)."""
        out = [(INPUT_KEY, self.input.nbytes), (LOGITS_KEY, self.logits.nbytes)]
        for s in (0, 1):
            out += [(state_key(st.name, s), st.nbytes) for st in self.states]
        return out

    @property
    def total_bytes(self) -> int:
        return sum(n for _, n in self.allocations())

    def bindings(self, parity: int) -> dict[str, str]:
        """Tensor name -> buffer key for a step of `parity` (0/1): read set `parity`, write the other."""
        if parity not in (0, 1):
            raise ValueError(f"parity is 0 or 1, got {parity}.")
        out = {self.input.name: INPUT_KEY, LOGITS: LOGITS_KEY}
        for st in self.states:
            out[st.name] = state_key(st.name, parity)
            out[new_state_name(st.name)] = state_key(st.name, 1 - parity)
        return out

    def addresses(self, pointers: Mapping[str, int], parity: int) -> dict[str, int]:
        """Tensor name -> device address for `set_tensor_address`, from the allocated pointers."""
        return {name: int(pointers[key]) for name, key in self.bindings(parity).items()}

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes to give `set_input_shape` (the data input and every state input)."""
        return {self.input.name: self.input.shape, **{st.name: st.shape for st in self.states}}


def state_key(name: str, state_set: int) -> str:
    """Buffer key of a state in set 0 or 1."""
    return f"{name}@{state_set}"


def _concrete(t: IoTensor, batch: int) -> tuple[int, ...]:
    shape = tuple(int(d) for d in t.shape)
    if not shape:
        raise BufferPlanError(f"{t.name!r} is a scalar; step tensors carry a batch axis.")
    if any(d < 0 for d in shape[1:]):
        raise BufferPlanError(f"{t.name!r} has shape {list(shape)}: only the batch axis may be dynamic; "
                              "re-export the bundle (run 'kwsdeploy check-trt').")
    if shape[0] >= 0 and shape[0] != batch:
        raise BufferPlanError(f"{t.name!r} has a fixed batch of {shape[0]}, asked for {batch}.")
    return (int(batch), *shape[1:])


def buffer_plan(tensors: Sequence[IoTensor], batch: int = 1) -> BufferPlan:
    """The plan for an engine's I/O tensors at `batch`; refuses anything outside the step contract."""
    if int(batch) != batch or batch < 1:
        raise BufferPlanError(f"batch must be a whole number >= 1, got {batch}.")
    by_name = {t.name: t for t in tensors}
    inputs = [t for t in tensors if t.is_input]
    outputs = {t.name: t for t in tensors if not t.is_input}
    data = [t for t in inputs if not is_state_name(t.name)]
    if len(data) != 1:
        raise BufferPlanError(f"a step engine has one data input besides state.*; got {[t.name for t in data]}.")
    if LOGITS not in outputs:
        raise BufferPlanError(f"a step engine outputs {LOGITS!r}; outputs are {sorted(outputs)}.")
    states = []
    for t in inputs:
        if not is_state_name(t.name):
            continue
        out = outputs.get(new_state_name(t.name))
        if out is None:
            raise BufferPlanError(f"state input {t.name!r} has no {new_state_name(t.name)!r} output.")
        if tuple(out.shape[1:]) != tuple(t.shape[1:]) or out.dtype != t.dtype:
            raise BufferPlanError(f"{out.name!r} ({list(out.shape)}, {out.dtype}) does not match {t.name!r} "
                                  f"({list(t.shape)}, {t.dtype}); the state cannot be swapped in place.")
        states.append(Slot(t.name, _concrete(t, batch), t.dtype))
    extra = sorted(set(outputs) - {LOGITS} - {new_state_name(s.name) for s in states})
    if extra:
        raise BufferPlanError(f"outputs {extra} are not part of the step contract (logits, new_state.*).")
    x = data[0]
    return BufferPlan(int(batch), Slot(x.name, _concrete(x, batch), x.dtype),
                      Slot(LOGITS, _concrete(by_name[LOGITS], batch), by_name[LOGITS].dtype), tuple(states))
