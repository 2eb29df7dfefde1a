"""Identical constants stored once: a quantized graph repeats the same zero points (all zeros, one
per layer and per activation) hundreds of times, each with its own long name; here every group of
initializers with the same type, shape and bytes keeps one, its users read that one, and what is
kept is stored as raw bytes. The numbers the graph computes do not change. The MFCC frontend's
constants (`frontend/...`) are left alone, so the size comparison that leaves them out stays honest."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

FRONTEND_PREFIX = "frontend/"


def share_constants(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `proto` with duplicate initializers merged, how many were dropped)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    protected = {i.name for i in g.input} | {o.name for o in g.output}
    keep: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    kept = []
    for init in g.initializer:
        if init.name.startswith(FRONTEND_PREFIX) or init.name in protected:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        key = (init.data_type, tuple(init.dims), arr.tobytes())
        if key in keep:
            rename[init.name] = keep[key]
            continue
        keep[key] = init.name
        kept.append(numpy_helper.from_array(arr, init.name))  # raw bytes, not one varint per int8
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del g.initializer[:]
    g.initializer.extend(kept)
    dropped = set(rename)
    info = [v for v in g.value_info if v.name not in dropped]
    del g.value_info[:]
    g.value_info.extend(info)
    return out, len(rename)
