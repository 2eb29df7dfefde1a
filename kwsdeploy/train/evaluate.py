"""Evaluation: top-1, macro F1 over the whole split, per-class recall, confusion matrix, plots.

Unlike the reference (F1 of the last batch, partial batches dropped), every clip of the split
counts. The metric functions are numpy-only; `predict_logits` runs a model on waveforms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """[C, C] counts: row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions.")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= num_classes or p.max() >= num_classes):
        raise ValueError(f"Class indices must lie in [0, {num_classes}).")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    Macro F1 averages over the classes that occur in the truth or the predictions (a class the
    split never contains and the model never predicts has no defined F1 and is left out).
    """
    labels = list(labels)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    per_class: dict[str, dict[str, Any]] = {}
    f1s = []
    for i, name in enumerate(labels):
        recall = tp[i] / support[i] if support[i] else None
        precision = tp[i] / predicted[i] if predicted[i] else None
        if support[i] or predicted[i]:
            denom = support[i] + predicted[i]
            f1 = 2.0 * tp[i] / denom
            f1s.append(f1)
        else:
            f1 = None
        per_class[name] = {
            "support": int(support[i]),
            "predicted": int(predicted[i]),
            "recall": recall,
            "precision": precision,
            "f1": f1,
        }
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "per_class": per_class,
        "labels": labels,
        "confusion": cm.tolist(),
    }


def plot_confusion(metrics: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """Write the confusion matrix as a PNG; None (nothing written) when matplotlib is missing."""
    from kwsdeploy.plotting import pyplot

    plt = pyplot()
    if plt is None:
        return None
    cm = np.asarray(metrics["confusion"])
    labels = metrics["labels"]
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.2%}, macro F1 {metrics['macro_f1']:.3f}")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    return _save_fig(plt, fig, Path(path))


def plot_curves(history: Iterable[dict[str, Any]], path: str | Path) -> Path | None:
    """Training curves (loss and accuracy per epoch) as a PNG; None when matplotlib is missing."""
    from kwsdeploy.plotting import pyplot

    plt = pyplot()
    if plt is None:
        return None
    rows = list(history)
    epochs = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "valid_loss"):
        if any(key in r for r in rows):
            a1.plot(epochs, [r.get(key) for r in rows], label=key)
    for key in ("train_acc", "valid_acc"):
        if any(key in r for r in rows):
            a2.plot(epochs, [r.get(key) for r in rows], label=key)
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    a2.set_xlabel("epoch"), a2.set_ylabel("accuracy"), a2.legend()
    return _save_fig(plt, fig, Path(path))


def _save_fig(plt, fig, path: Path) -> Path:
    """Lay out, save as a PNG atomically (temp + rename, umask applied) and close `fig`; an existing file
    is replaced only when it is a plot kwsdeploy wrote (its PNG 'Software' text), never a file of the user's."""
    from kwsdeploy.atomic import OutputError, is_our_png, writing_file

    if path.is_dir() or (path.exists() and not is_our_png(path)):
        raise OutputError(f"{path} exists and is not a plot kwsdeploy wrote: choose another path for the PNG.")
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png", metadata={"Software": "kwsdeploy"})
    plt.close(fig)
    return path


def predict_logits(model, feature_config, waveforms, batch_size: int = 256, device: str = "cpu"):
    """Logits [N, C] (float32 CPU tensor) of `model` on waveforms [N, samples] via the MFCC of `feature_config`."""
    import torch

    from kwsdeploy.features import MFCC

    mfcc = MFCC(feature_config).to(device)
    model = model.to(device).eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(waveforms), batch_size):
            wave = torch.as_tensor(waveforms[i : i + batch_size], dtype=torch.float32).to(device)
            outs.append(model(mfcc(wave).unsqueeze(1)).float().cpu())
    if not outs:
        from kwsdeploy.models.registry import kws_info

        return torch.zeros(0, kws_info(model).num_classes)
    return torch.cat(outs)


def evaluate_dataset(model, feature_config, dataset, labels: Sequence[str], batch_size: int = 256,
                     device: str = "cpu", world=None, num_workers: int = 0) -> dict[str, Any]:
    """Metrics (plus mean cross-entropy `loss`) of `model` over every clip of `dataset`.

    With a `world` of several ranks, rank r evaluates batches r, r+W, ... of the same batches one
    process would make, and every rank gets the metrics of the whole split: each clip exactly once,
    the loss summed in batch order, so the numbers equal one process's exactly."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from kwsdeploy.features import MFCC
    from kwsdeploy.train.distributed import shard_batches

    mfcc = MFCC(feature_config).to(device)
    model = model.to(device).eval()
    n = len(dataset)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    mine = shard_batches(len(batches), rank, size)
    loader = DataLoader(dataset, batch_sampler=[batches[b] for b in mine], num_workers=num_workers)
    parts = []  # (batch number, predictions, truths, summed loss)
    with torch.no_grad():
        for b, (wave, target) in zip(mine, loader):
            wave, target = wave.to(device), target.to(device)
            logits = model(mfcc(wave).unsqueeze(1)).float()
            loss = float(F.cross_entropy(logits, target, reduction="sum"))
            parts.append((b, logits.argmax(1).cpu().numpy(), target.cpu().numpy(), loss))
    if size > 1:
        parts = sorted((p for rank_parts in world.gather(parts) for p in rank_parts), key=lambda p: p[0])
    loss_sum = 0.0
    for p in parts:
        loss_sum += p[3]
    y_pred = np.concatenate([p[1] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
    y_true = np.concatenate([p[2] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
    metrics = classification_metrics(y_true, y_pred, labels)
    metrics["loss"] = loss_sum / max(1, len(y_true))
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """Plain-text report: accuracy, macro F1, per-class recall, confusion matrix."""
    labels = metrics["labels"]
    lines = [
        f"clips: {metrics['n']}   top-1 accuracy: {metrics['accuracy']:.2%}   macro F1: {metrics['macro_f1']:.4f}",
        "",
        "per-class recall:",
    ]
    width = max(len(x) for x in labels) if labels else 5
    for name in labels:
        pc = metrics["per_class"][name]
        rec = "   n/a" if pc["recall"] is None else f"{pc['recall']:6.1%}"
        lines.append(f"  {name:<{width}}  {rec}  (support {pc['support']})")
    lines += ["", "confusion matrix (rows: true, columns: predicted):"]
    cw = max(4, max((len(str(v)) for row in metrics["confusion"] for v in row), default=1) + 1)
    short = [x[: cw - 1] for x in labels]
    lines.append(" " * (width + 2) + "".join(f"{s:>{cw}}" for s in short))
    for name, row in zip(labels, metrics["confusion"]):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)


class _Remapped:
    """A dataset whose label indices are translated into the model's label order."""

    def __init__(self, ds, remap: list[int]) -> None:
        self.ds, self.remap = ds, remap

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return x, self.remap[y]


def _known_labels(data_labels: Sequence[str], model_labels: Sequence[str], where: str) -> None:
    """A ValueError naming `where` when the data holds a label the model does not know."""
    missing = [x for x in data_labels if x not in model_labels]
    if missing:
        raise ValueError(f"{where} has label(s) {missing} that the model does not know; its labels are: "
                         f"{', '.join(model_labels)}.")


def in_model_labels(ds, data_labels: Sequence[str], model_labels: Sequence[str]):
    """`ds` with its label indices in the model's order (a model may know more classes, e.g. `_unknown_`,
    than the data holds); a data label the model lacks is a ValueError."""
    data_labels, model_labels = list(data_labels), list(model_labels)
    if data_labels == model_labels:
        return ds
    _known_labels(data_labels, model_labels, "the data")
    return _Remapped(ds, [model_labels.index(x) for x in data_labels])


def prepared_split(data, split: str, model_labels: Sequence[str]):
    """A prepared directory's split with its labels in the model's order; a data label the model lacks
    is a one-line ValueError naming the directory."""
    from kwsdeploy.data.dataset import KwsDataset, load_labels

    data_labels = load_labels(data)
    _known_labels(data_labels, list(model_labels), str(data))  # before the split is read
    return in_model_labels(KwsDataset(data, split), data_labels, model_labels)
