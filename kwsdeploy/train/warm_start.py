"""`train --init CKPT`: start from a trained checkpoint of the same model, even with other labels.

Every tensor of the same name and shape is copied; the classifier's rows (the last tensors whose
first axis is the class count) are copied by label name, so a class the checkpoint lacks (say
`_unknown_`) keeps its fresh initialisation and the others keep what they learned. The feature
config must match (the weights were trained on those features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

HEAD_TENSORS = 2  # the classifier's weight and bias are among the last tensors of every family's state dict


def warm_start(model: torch.nn.Module, path: Path, labels: Sequence[str], feature_config) -> dict:
    """Copy what fits from checkpoint `path` into `model`; returns counts (copied, rows, skipped)."""
    from kwsdeploy.models.registry import kws_info
    from kwsdeploy.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    name = kws_info(model).name
    if loaded.card.get("model") != name:
        raise ValueError(f"--init {path} holds a {loaded.card.get('model')} checkpoint, not {name}: "
                         "give a checkpoint of the model being trained.")
    if loaded.feature_config != feature_config:
        raise ValueError(f"--init {path} was trained with other features ({loaded.feature_config}); "
                         "train with the same --features/--n-mfcc or start without --init.")
    old, new = list(loaded.labels), list(labels)
    src, dst = loaded.model.state_dict(), model.state_dict()
    tail = [k for k in dst if dst[k].dim() >= 1][-HEAD_TENSORS:]
    copied, rows, skipped = 0, 0, []
    for key, value in dst.items():
        s = src.get(key)
        if s is None:
            skipped.append(key)
            continue
        if key in tail and s.dim() >= 1 and s.shape[0] == len(old) and value.shape[0] == len(new) \
                and s.shape[1:] == value.shape[1:] and old != new:
            for i, lab in enumerate(new):
                if lab in old:
                    value[i] = s[old.index(lab)]
                    rows += 1
            continue
        if s.shape != value.shape:
            skipped.append(key)
            continue
        value.copy_(s)
        copied += 1
    model.load_state_dict(dst)
    return {"copied": copied, "head_rows": rows, "skipped": skipped, "from": str(path)}
