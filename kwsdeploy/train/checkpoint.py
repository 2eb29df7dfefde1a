"""The kwsdeploy checkpoint: a directory with `model.safetensors` and a JSON model card `card.json`.

The card names the registry model, its build arguments, the label order, the feature config,
a training summary, metrics, library versions and the sha256 of the weights file. Loading never
unpickles: the card is JSON, the weights are safetensors, and a card that does not match the
weights (hash, tensor names, shapes) is refused with one clear line.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kwsdeploy.atomic import CHECKPOINT, OutputError, check_output_dir, writing_dir
from kwsdeploy.config import FeatureConfig
from kwsdeploy.hashing import sha256_file  # noqa: F401  (checkpoint users import it from here)

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
TRAIN_STATE_FILE = "train_state.safetensors"
TRAIN_STATE_META = "train_state.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, tampered, or not matching its card."""


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model (in eval mode) plus what its card says about it."""

    model: Any
    card: dict
    labels: list[str]
    feature_config: FeatureConfig
    path: Path = field(default_factory=Path)


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a checkpoint."""
    import numpy
    import safetensors
    import torch

    import kwsdeploy

    return {
        "kwsdeploy": kwsdeploy.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint directory for a directory path or the path of a file inside it."""
    p = Path(path)
    if p.name in (WEIGHTS_FILE, CARD_FILE) or p.suffix in (".safetensors", ".json"):
        p = p.parent
    return p


def _weights_dict(model) -> dict:
    # safetensors refuses shared storage and non-contiguous tensors: store independent copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model,
    labels: Sequence[str],
    feature_config: FeatureConfig,
    *,
    model_config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    train_state: "TrainState | None" = None,
    overwrite: bool = True,
    **info: Any,
) -> Path:
    """Write `model` as a checkpoint directory at `path`, atomically (temp dir + rename).

    `model` must come from `kwsdeploy.models.create` (it carries its card as `model.kws`). Extra keyword arguments are stored in the card under their own names. An older
    checkpoint at `path` is replaced only with `overwrite`; anything else there never is.
    """
    from safetensors.torch import save_file

    from kwsdeploy.models.registry import NotAKwsModelError, kws_info

    try:
        kws = kws_info(model)
    except NotAKwsModelError as exc:
        raise CheckpointError(str(exc)) from None
    name, num_classes = kws.name, kws.num_classes
    labels = [str(x) for x in labels]
    if len(labels) != num_classes:
        raise CheckpointError(f"{len(labels)} labels given for a model with {num_classes} outputs.")
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"Labels must be unique, got {labels}.")
    final = checkpoint_dir(path)
    cfg = dict(model_config if model_config is not None else kws.overrides)
    try:
        check_output_dir(final, CHECKPOINT, overwrite)
    except OutputError as exc:
        raise CheckpointError(str(exc)) from None
    with writing_dir(final, CHECKPOINT, overwrite) as tmp:
        weights = _weights_dict(model)
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})  # one key: safetensors orders several at random, and the hash must not move
        card = {
            "schema_version": SCHEMA_VERSION,
            "kind": "kwsdeploy-checkpoint",
            "model": name,
            "family": kws.family,
            "num_classes": num_classes,
            "n_mfcc": kws.n_mfcc,
            "model_config": cfg,
            "labels": labels,
            "feature_config": feature_config.to_dict(),
            "training": dict(training or {}),
            "metrics": dict(metrics or {}),
            "versions": versions(),
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
            "tensors": {k: list(v.shape) for k, v in weights.items()},
        }
        for k, v in info.items():
            card.setdefault(k, v)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=1, sort_keys=False) + "\n")
        if train_state is not None:
            train_state.write(tmp)
    return final


def read_card(path: str | os.PathLike) -> dict:
    """The card of a checkpoint, checked for schema version and required fields (weights not read)."""
    d = checkpoint_dir(path)
    card_path = d / CARD_FILE
    if not d.exists():
        raise CheckpointError(f"Checkpoint {d} does not exist.")
    if not card_path.is_file():
        raise CheckpointError(
            f"{d} has no {CARD_FILE}: not a kwsdeploy checkpoint. "
            "A reference best.pt is brought in with 'kwsdeploy import-reference'."
        )
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{card_path} is not valid JSON ({exc}); the checkpoint is damaged.") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{card_path} is not a JSON object; the checkpoint is damaged.")
    version = card.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{card_path} has schema version {version!r}; this kwsdeploy reads version {SCHEMA_VERSION}."
        )
    required = ("model", "num_classes", "n_mfcc", "labels", "feature_config", "weights_sha256")
    missing = [k for k in required if k not in card]
    if missing:
        raise CheckpointError(f"{card_path} lacks field(s) {missing}; the checkpoint is damaged.")
    for key, kind, what in (("model", str, "a registry name"), ("weights_sha256", str, "a sha256 hex digest"),
                            ("weights_file", str, "a file name"), ("model_config", dict, "a JSON object"),
                            ("training", dict, "a JSON object"), ("metrics", dict, "a JSON object")):
        if key in card and not (isinstance(card[key], kind) or (key in ("model_config",) and card[key] is None)):
            raise CheckpointError(f"{card_path}: {key} must be {what}, got {card[key]!r}; the card is damaged.")
    for key in ("num_classes", "n_mfcc"):
        v = card[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
            raise CheckpointError(f"{card_path}: {key} = {v!r}, expected an integer in 1..4096; the card is damaged.")
    if not isinstance(card["labels"], list):
        raise CheckpointError(f"{card_path}: labels must be a list; the card is damaged.")
    if len(card["labels"]) != card["num_classes"]:
        raise CheckpointError(
            f"{card_path} lists {len(card['labels'])} labels for {card['num_classes']} classes; the card is damaged."
        )
    from kwsdeploy.manifest import ManifestError, check_labels, is_plain_name

    try:
        check_labels(card["labels"], str(card_path))
    except ManifestError as exc:
        raise CheckpointError(f"{exc} The card is damaged.") from None
    if not is_plain_name(card.get("weights_file", WEIGHTS_FILE)):
        raise CheckpointError(f"{card_path}: weights_file {card.get('weights_file')!r} is not a plain file name "
                              "inside the checkpoint; the card is damaged.")
    if not isinstance(card["feature_config"], dict):
        raise CheckpointError(f"{card_path}: feature_config must be a JSON object; the card is damaged.")
    try:
        FeatureConfig.from_dict(card["feature_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: {exc}") from None
    return card


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint (directory or its model.safetensors): checks hash, names and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kwsdeploy.models import registry
    from kwsdeploy.models.reference_weights import ReferenceWeightsError, check_state_dict

    d = checkpoint_dir(path)
    card = read_card(d)
    weights_path = d / card.get("weights_file", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise CheckpointError(f"Checkpoint {d} has a card but no {weights_path.name}.")
    digest = sha256_file(weights_path)
    if digest != card["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path} does not match its card (sha256 {digest[:12]}..., card says "
            f"{str(card['weights_sha256'])[:12]}...): the checkpoint was modified or damaged; re-export it."
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    try:
        feature_config = FeatureConfig.from_dict(card["feature_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"The card's feature_config is invalid: {exc}") from None
    try:
        model = registry.create(
            card["model"], num_classes=int(card["num_classes"]), n_mfcc=int(card["n_mfcc"]),
            **dict(card.get("model_config") or {}),
        )
    except registry.UnknownModelError as exc:
        raise CheckpointError(f"The card names model {card['model']!r}: {exc}") from None
    except TypeError as exc:  # the message quotes the card's key as is: escape what would break the line
        detail = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
        raise CheckpointError(f"The card's model_config does not fit {card['model']!r}: {detail}") from None
    if feature_config.n_mfcc != registry.kws_info(model).n_mfcc:
        raise CheckpointError(
            f"The card's feature config gives {feature_config.n_mfcc} MFCCs but the model takes {registry.kws_info(model).n_mfcc}."
        )
    try:
        check_state_dict(model, state, what=f"checkpoint of {card['model']!r}")
    except ReferenceWeightsError as exc:
        raise CheckpointError(f"{weights_path} does not match its card: {exc}") from None
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return LoadedCheckpoint(model=model, card=card, labels=list(card["labels"]), feature_config=feature_config, path=d)


def demo_checkpoint_path(model_name: str) -> Path:
    """The shipped demo checkpoint of a model (aliases resolved), or a clear error if none ships."""
    from kwsdeploy.models.registry import get_card

    name = get_card(model_name).name
    root = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"
    d = root / name
    if not (d / CARD_FILE).is_file():
        shipped = sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file()) if root.is_dir() else []
        raise CheckpointError(
            f"No demo checkpoint is shipped for {name!r} (shipped: {', '.join(shipped) or 'none'}); "
            f"train one with 'kwsdeploy train --model {name} --preset demo --out RUN_DIR'."
        )
    return d


@dataclass
class TrainState:
    """What `--resume` needs beyond the weights: optimizer, scaler, RNG states, counters.

    Stored beside the weights as safetensors (tensors) + JSON (everything else), so resuming
    never unpickles either.
    """

    tensors: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.tensors.items()}
        save_file(tensors, str(directory / TRAIN_STATE_FILE))
        meta = dict(self.meta, tensors_sha256=sha256_file(directory / TRAIN_STATE_FILE))
        (directory / TRAIN_STATE_META).write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def read(cls, directory: str | os.PathLike) -> "TrainState":
        """Read the training state saved with a checkpoint (for --resume)."""
        from safetensors.torch import load_file

        d = checkpoint_dir(directory)
        if not (d / TRAIN_STATE_META).is_file() or not (d / TRAIN_STATE_FILE).is_file():
            raise CheckpointError(f"{d} has no training state to resume from (it is not a 'last' checkpoint).")
        meta = json.loads((d / TRAIN_STATE_META).read_text())
        if sha256_file(d / TRAIN_STATE_FILE) != meta.get("tensors_sha256"):
            raise CheckpointError(f"{d / TRAIN_STATE_FILE} does not match {TRAIN_STATE_META}; cannot resume.")
        return cls(tensors=load_file(str(d / TRAIN_STATE_FILE)), meta=meta)
