"""Pack and unpack what `--resume` needs (optimizer, scheduler, grad scaler, RNG states, counters)
into a `TrainState`: tensors for safetensors, everything else JSON, so resuming never unpickles; and
restore a run from its last/ checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from kwsdeploy.train.best import Best
from kwsdeploy.train.checkpoint import CheckpointError, TrainState, load_checkpoint
from kwsdeploy.train.run_dir import RunDir


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return {"__tuple__": [_jsonable(v) for v in x]}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


def _from_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__tuple__"}:
            return tuple(_from_jsonable(v) for v in x["__tuple__"])
        return {k: _from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_jsonable(v) for v in x]
    return x


def pack_train_state(optimizer, scheduler, scaler, counters: dict[str, Any]) -> TrainState:
    """Everything needed to continue a run bit-exactly after the last finished epoch."""
    tensors: dict[str, torch.Tensor] = {}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    tensors["rng.torch"] = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for i, s in enumerate(cuda_states):
        tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np_state[1].astype(np.int64))
    meta = {
        "counters": counters,
        "optimizer_param_groups": _jsonable(opt["param_groups"]),
        "optimizer_scalars": _jsonable(scalars),
        "optimizer_state_ids": [str(k) for k in opt["state"]],
        "scheduler": scheduler.state_dict(),
        "scaler": _jsonable(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_cuda_count": len(cuda_states),
    }
    return TrainState(tensors=tensors, meta=meta)


def unpack_train_state(state: TrainState, optimizer, scheduler, scaler) -> dict[str, Any]:
    """Restore optimizer, scheduler, scaler and RNG states; returns the saved counters."""
    meta, tensors = state.meta, state.tensors
    opt_state: dict[int, dict[str, Any]] = {}
    scalars = _from_jsonable(meta["optimizer_scalars"])
    for pid in meta["optimizer_state_ids"]:
        entry = dict(scalars.get(pid, {}))
        prefix = f"optimizer.{pid}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                entry[k[len(prefix):]] = v
        opt_state[int(pid)] = entry
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": _from_jsonable(meta["optimizer_param_groups"])})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"The saved optimizer state does not fit this model: {exc}") from None
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(_from_jsonable(meta["scaler"]))
    torch.set_rng_state(tensors["rng.torch"])
    n_cuda = int(meta.get("rng_cuda_count", 0))
    if n_cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(n_cuda)])
    kind, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((kind, tensors["rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_from_jsonable(meta["rng_python"]))
    return dict(meta["counters"])


def restore_run(run: RunDir, model, optimizer, scheduler, scaler) -> tuple[int, Best, list[dict[str, Any]]]:
    """Load last/ of `run` into the model and the training state; (next epoch, best so far, history)."""
    loaded = load_checkpoint(run.last)
    model.load_state_dict(loaded.model.state_dict(), strict=True)
    counters = unpack_train_state(TrainState.read(run.last), optimizer, scheduler, scaler)
    next_epoch = counters["next_epoch"]
    return next_epoch, Best.from_counters(counters), run.history(next_epoch)
