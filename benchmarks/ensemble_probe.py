"""Probe: clip accuracy of ensembles of checkpoints (softmax averaged) on the validation and test speakers.

Usage: python benchmarks/ensemble_probe.py PREPARED [CHECKPOINT ...] [--sizes 1,2,3,5]
(PREPARED: the prepared FSDD tree of the README's Data section, `fsdd_real`: valid = theo, test = jackson;
default checkpoints: the five shipped ones.)
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

SHIPPED = ("tcresnet8-causal", "kwm-causal-64-4", "matchboxnet-causal", "bcresnet1-causal", "convmixer")


def split_probabilities(checkpoint: Path, data: Path, split: str) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """(model name, labels, softmax [N, C], targets [N]) of one checkpoint on a prepared split."""
    import torch

    from kwsdeploy.train.checkpoint import load_checkpoint
    from kwsdeploy.train.evaluate import predict_logits, prepared_split

    ck = load_checkpoint(checkpoint)
    ds = prepared_split(data, split, ck.labels)
    waves = np.stack([np.asarray(ds[i][0]) for i in range(len(ds))])
    targets = np.array([int(ds[i][1]) for i in range(len(ds))])
    probs = torch.softmax(predict_logits(ck.model, ck.feature_config, waves), 1).numpy()
    return ck.card["model"], list(ck.labels), probs, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("checkpoints", nargs="*", type=Path)
    ap.add_argument("--sizes", default="1,2,3,5", help="ensemble sizes to list")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from kwsdeploy.train.checkpoint import demo_checkpoint_path

    checkpoints = args.checkpoints or [demo_checkpoint_path(m) for m in SHIPPED]
    probs: dict[tuple[str, str], np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    names, labels = [], None
    for ckpt in checkpoints:
        for split in ("valid", "test"):
            name, labs, p, t = split_probabilities(ckpt, args.data, split)
            if labels is not None and labs != labels:
                raise SystemExit(f"{ckpt}: its labels differ from the first checkpoint's; ensembles need one label set")
            labels = labs
            probs[(name, split)], targets[split] = p, t
        names.append(name)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| checkpoints | theo (valid) | jackson (test) |\n|---|---:|---:|")
    for r in sizes:
        for combo in itertools.combinations(names, r):
            acc = [100.0 * float((sum(probs[(m, s)] for m in combo).argmax(1) == targets[s]).mean())
                   for s in ("valid", "test")]
            print(f"| {' + '.join(combo)} | {acc[0]:.2f} % | {acc[1]:.2f} % |")


if __name__ == "__main__":
    main()
