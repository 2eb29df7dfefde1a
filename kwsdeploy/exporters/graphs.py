"""The fp32 graphs of an export and their torch reference: the step form and frontends resolved once,
each mode exported to ONNX with the torch logits it must reproduce, and a precision's pass on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from kwsdeploy.config import FeatureConfig
from kwsdeploy.precisions import PassContext, Precision


# -- torch reference --------------------------------------------------------------------------
def torch_stream(step: nn.Module, init_state: Sequence[torch.Tensor], x: np.ndarray, packet: int) -> np.ndarray:
    """Run a torch step module over `x` [B, ..., T] packet by packet: logits [packets, B, classes]."""
    from kwsdeploy.runtime.base import split_packets

    state = tuple(init_state)
    out = []
    with torch.no_grad():
        for p in split_packets(x, packet):
            logits, *state = step(torch.from_numpy(p), *state)
            out.append(logits.float().numpy())
    return np.stack(out)


def _clip_frames(features: np.ndarray, frames: int) -> np.ndarray:
    """[N, n_mfcc, T] -> [N, 1, n_mfcc, frames] (cut or zero-padded at the end)."""
    f = features[..., :frames]
    if f.shape[-1] < frames:
        f = np.pad(f, [(0, 0)] * (f.ndim - 1) + [(0, frames - f.shape[-1])])
    return np.ascontiguousarray(f[:, None]).astype(np.float32)


# -- graphs -------------------------------------------------------------------------------------
@dataclass
class Graphs:
    """One mode's fp32 graphs (model core and optional frontend) and the torch logits they must give."""

    mode: str
    kind: str  # "features" | "audio"
    core: Any  # onnx.ModelProto of the model, frontend not attached
    front: Any  # onnx.ModelProto of the frontend, or None
    x: np.ndarray  # the parity input as the full graph takes it
    expected: np.ndarray  # torch logits on x
    seconds: float  # export time of the fp32 graphs

    @property
    def golden_key(self) -> str:
        """Key prefix of this mode's golden input/logits in golden.npz."""
        return f"{self.mode}.{self.kind}"


@dataclass
class TorchModules:
    """The torch modules a bundle is exported from (the step form and frontends resolved once)."""

    model: nn.Module
    feature_config: FeatureConfig
    smodel: nn.Module | None = None
    frontend_step: nn.Module | None = None
    frontend_offline: nn.Module | None = None


def resolve_modules(
    model: nn.Module, feature_config: FeatureConfig, modes: Sequence[str], frontend: bool,
    smodel: nn.Module | None = None, frontend_step: nn.Module | None = None,
    frontend_offline: nn.Module | None = None, hop_frames: int | None = None,
) -> TorchModules:
    """The step form (converted unless given) and the frontends a request needs, all in eval mode."""
    for mode in modes:
        if mode not in ("step", "offline"):
            raise ValueError(f"mode must be 'step' or 'offline', got {mode!r}.")
    if "step" in modes and not feature_config.causal and not frontend:
        raise ValueError(
            "This model uses the reference frontend (top_db relative to each window), so its step graph "
            "takes audio: export it with --frontend (the window's clamp and DCT run inside the graph)."
        )
    if "step" in modes and smodel is None:
        from kwsdeploy.streaming.convert import to_streaming

        options = {"packet_frames": hop_frames} if hop_frames else {}  # windowed hop or exact packet
        smodel = to_streaming(model, feature_config=feature_config, **options)
    if frontend and "step" in modes and frontend_step is None:
        from kwsdeploy.streaming.pipeline import make_frontend

        frontend_step = make_frontend(smodel)
    if frontend and "offline" in modes and frontend_offline is None:
        from kwsdeploy.features import MFCC

        frontend_offline = MFCC(feature_config)
    evals = [m.eval() if m is not None else None for m in (smodel, frontend_step, frontend_offline)]
    return TorchModules(model.eval(), feature_config, *evals)


def step_graphs(mods: TorchModules, data: np.ndarray, frontend: bool, opset: int, exporter: str) -> Graphs:
    """The fp32 step graph(s) and the torch step form's logits streamed over the parity clips."""
    from kwsdeploy.exporters import onnx as ox

    t0 = time.perf_counter()
    smodel, fc = mods.smodel, mods.feature_config
    spec = smodel.stream_spec
    step_mod: nn.Module = smodel
    states = list(smodel.init_state(data.shape[0]))
    packet = spec.packet_frames
    if frontend:
        step_mod = ox.FrontendStep(mods.frontend_step, smodel).eval()
        fs = ox.frontend_state_spec(mods.frontend_step, fc)
        states = [torch.zeros(data.shape[0], *fs.shape), *states]
        packet = spec.packet_samples
    core = ox.export_step(smodel, opset=opset, exporter=exporter)
    front = ox.export_frontend_step(mods.frontend_step, spec, opset, exporter) if frontend else None
    expected = torch_stream(step_mod, states, data, packet)
    return Graphs("step", input_kind(frontend), core, front, data, expected, time.perf_counter() - t0)


def offline_graphs(mods: TorchModules, data: np.ndarray, frontend: bool, opset: int, exporter: str) -> Graphs:
    """The fp32 offline graph(s) and the torch model's logits on one clip of each parity input."""
    from kwsdeploy.exporters import onnx as ox

    t0 = time.perf_counter()
    fc = mods.feature_config
    if frontend:
        x = data[:, : fc.clip_samples]
        if x.shape[1] < fc.clip_samples:
            x = np.pad(x, [(0, 0), (0, fc.clip_samples - x.shape[1])])
        module: nn.Module = ox.FrontendOffline(mods.frontend_offline, mods.model).eval()
    else:
        x = _clip_frames(data, fc.clip_frames)
        module = mods.model
    x = np.ascontiguousarray(x, dtype=np.float32)
    core = ox.export_offline(mods.model, clip_frames=fc.clip_frames, opset=opset, exporter=exporter)
    front = ox.export_frontend_offline(mods.frontend_offline, fc.clip_samples, opset, exporter) if frontend else None
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).float().numpy()
    return Graphs("offline", input_kind(frontend), core, front, x, expected, time.perf_counter() - t0)


def input_kind(frontend: bool) -> str:
    """What a graph's input is: audio with the frontend inside, else features."""
    return "audio" if frontend else "features"


def precision_graph(graphs: Graphs, precision: Precision, ctx: PassContext):
    """The precision's pass on the fp32 model graph, the fp32 frontend attached in front, checked."""
    from kwsdeploy.exporters import onnx as ox

    fn = precision.pass_fn()
    core = graphs.core if fn is None else fn(graphs.core, ctx)
    proto = ox.attach_frontend(graphs.front, core) if graphs.front is not None else core
    ox.check_graph(proto)
    return proto
