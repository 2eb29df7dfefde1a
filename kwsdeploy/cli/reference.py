"""`kwsdeploy import-reference` (a TorchKWS/KWM best.pt -> a kwsdeploy checkpoint) and
`kwsdeploy predict` (labels, probabilities and raw logits of WAV files under a checkpoint).

A reference best.pt is a plain state dict with no labels: it is read with
`torch.load(weights_only=True)` only, mapped strictly onto our model, and saved with the reference
frontend (`FeatureConfig.reference`) and the reference's label order in the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from kwsdeploy.cli.common import UserError, user_errors
from kwsdeploy.cli.evaluate import PLACEMENT_HELP, check_placement


def read_reference_state_dict(path: Path) -> dict:
    """A reference state dict via `torch.load(weights_only=True)`; anything else is one clear error."""
    import pickle

    import torch

    if not path.is_file():
        raise UserError(f"Reference checkpoint {path} not found; give the path of the best.pt that TorchKWS saved.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"Refusing {path}: it holds pickled code or objects, not a plain state dict; kwsdeploy only loads "
            "tensors (torch.load weights_only=True). Re-save it with torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"Cannot read {path} as a torch checkpoint ({first}); is it a TorchKWS best.pt?") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict (a mapping of names to tensors); got {type(obj).__name__}.")
    return dict(obj)


def _class_count_candidates(card, state: dict) -> list[int]:
    """Class counts the state dict could have, read off our class-dependent tensors' shapes."""
    try:
        a, b = _build(card, 12)[0].state_dict(), _build(card, 13)[0].state_dict()
    except Exception:  # a builder that cannot be built at these counts: fall back to the reference's counts
        return [12, 35, 30]
    patterns = []
    for k, t in a.items():
        if k in b and t.dim() >= 2 and tuple(t.shape) != tuple(b[k].shape):
            axis = next(i for i, (x, y) in enumerate(zip(t.shape, b[k].shape)) if x != y)
            patterns.append((tuple(t.shape), axis))
    found: dict[int, int] = {}
    for v in state.values():
        for shape, axis in patterns:
            if v.dim() == len(shape) and all(v.shape[i] == shape[i] for i in range(len(shape)) if i != axis):
                found[int(v.shape[axis])] = found.get(int(v.shape[axis]), 0) + 1
    ordered = sorted(found, key=lambda c: (-found[c], c))
    return ordered + [c for c in (12, 35, 30) if c not in found]


def _fits(card, state: dict, num_classes: int) -> bool:
    """Whether `state` maps strictly onto `card`'s model (names and shapes)."""
    from kwsdeploy.models.reference_weights import ReferenceWeightsError, load_reference_weights

    import warnings

    try:
        model, on_meta = _build(card, num_classes)
        with warnings.catch_warnings():  # copying into meta tensors is a no-op that torch warns about
            warnings.simplefilter("ignore")
            load_reference_weights(model, state)
    except ReferenceWeightsError:
        return False
    except NotImplementedError as exc:  # names and shapes passed; only the copy into meta tensors failed
        return on_meta and "meta" in str(exc)
    except Exception:
        return False
    return True


def _build(card, num_classes: int):
    """The card's model on the meta device (no memory, fast) where its builder allows, else on CPU."""
    import torch

    try:
        with torch.device("meta"):
            return card.build(num_classes=num_classes), True
    except Exception:
        return card.build(num_classes=num_classes), False


def looks_like(state: dict, exclude: str, num_classes: Sequence[int]) -> str | None:
    """The first registry model (reference names first) whose layout fits `state`, or None."""
    from kwsdeploy.models.registry import list_cards

    cards = [c for c in list_cards() if c.name != exclude]
    cards.sort(key=lambda c: c.reference_name is None)
    for card in cards:
        for c in num_classes:
            if _fits(card, state, c):
                return card.name
    return None


def import_reference(model_name: str, weights: Path, out: Path, labels: Optional[str] = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Turn a reference best.pt into a kwsdeploy checkpoint at `out`; returns its card.

    An existing checkpoint at `out` is replaced only with `overwrite`; anything else there never is."""
    from kwsdeploy.atomic import CHECKPOINT, check_output_dir
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.labels import default_order_name, reference_labels
    from kwsdeploy.models.reference_weights import ReferenceWeightsError, load_reference_weights
    from kwsdeploy.models.registry import get_card, kws_info
    from kwsdeploy.train.checkpoint import save_checkpoint, sha256_file

    card = get_card(model_name)
    check_output_dir(Path(out), CHECKPOINT, overwrite, [("WEIGHTS", Path(weights))])
    state = read_reference_state_dict(Path(weights))
    explicit = None
    if labels and labels.strip().lower() not in ("gsc12", "gsc30", "gsc35"):
        explicit = len([w for w in labels.split(",")])
    candidates = _class_count_candidates(card, state)
    if explicit:
        candidates = [explicit] + [c for c in candidates if c != explicit]
    model, first_error = None, None
    for c in candidates:
        m = card.build(num_classes=c)
        try:
            model = load_reference_weights(m, state)
            break
        except ReferenceWeightsError as exc:
            first_error = first_error or str(exc)
    if model is None:
        other = looks_like(state, card.name, candidates[:3])
        hint = f" It looks like a '{other}' state dict: run with --model {other}." if other else (
            " No model of the registry fits it; is it a TorchKWS/KWM state dict?")
        raise UserError(f"{Path(weights).name} is not a '{card.name}' state dict ({str(first_error).split(';')[0].rstrip('.?')}).{hint}")
    n = kws_info(model).num_classes
    names = reference_labels(labels, n)
    order = labels.strip().lower() if labels and labels.strip().lower() in ("gsc12", "gsc30", "gsc35") else (
        "custom" if labels else default_order_name(n))
    fc = FeatureConfig.reference(kws_info(model).n_mfcc)
    training = {"source": "reference (TorchKWS/KWM) state dict", "file": Path(weights).name,
                "file_sha256": sha256_file(Path(weights)), "label_order": order,
                "frontend": "FeatureConfig.reference(): torchaudio MFCC, top_db 80 relative to each clip's maximum"}
    path = save_checkpoint(out, model, names, fc, model_config={}, training=training, metrics={},
                           imported_from="reference", overwrite=overwrite)
    return json.loads((path / "card.json").read_text())


def predict_files(checkpoint: str, files: Sequence[Path], placement: str = "auto") -> list[dict[str, Any]]:
    """Per file: top label, probabilities (by label), raw logits (in label order) and what was done to the audio."""
    import torch

    from kwsdeploy.audio import load_audio
    from kwsdeploy.placement import placed, placement_note, resolve_placement
    from kwsdeploy.features import MFCC
    from kwsdeploy.train.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    fc = ck.feature_config
    import numpy as np

    placement = resolve_placement(placement, ck.card)
    waves, notes = [], []
    for f in files:
        x, info = load_audio(f, fc.sample_rate)
        n = list(info.notes)
        wave = placed(x, fc.clip_samples, placement)
        if len(x) != len(wave) or not np.array_equal(x, wave):  # say what was done, if anything
            n.append(f"{len(x) / fc.sample_rate:.2f} s; "
                     + placement_note([len(x)], fc.clip_samples, placement, fc.sample_rate))
        waves.append(wave)
        notes.append(n)
    if not waves:
        return []

    with torch.no_grad():
        feats = MFCC(fc)(torch.from_numpy(np.stack(waves)))
        logits = ck.model(feats.unsqueeze(1)).float()
        probs = torch.softmax(logits, dim=1)
    out = []
    for f, lg, p, n in zip(files, logits.tolist(), probs.tolist(), notes):
        top = int(np.argmax(lg))
        out.append({"file": str(f), "label": ck.labels[top], "index": top,
                    "probabilities": dict(zip(ck.labels, p)), "logits": lg, "labels": ck.labels, "notes": n})
    return out


def register(app: typer.Typer) -> None:
    """Add `import-reference` and `predict` to the CLI."""

    @app.command("import-reference")
    def import_reference_cmd(
        weights: Path = typer.Argument(..., help="The reference's best.pt (a plain state dict)."),
        model: str = typer.Option(..., "--model", "-m", help="Registry name, e.g. kwm-64-12, tcresnet8."),
        out: Path = typer.Option(..., "--out", "-o", help="Checkpoint directory to write."),
        labels: Optional[str] = typer.Option(
            None, "--labels", help="gsc12 | gsc30 | gsc35 | w1,w2,... (default: from the number of classes)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already at --out."),
    ) -> None:
        """Bring a model trained with TorchKWS/KWM into kwsdeploy (reference frontend and label order)."""
        with user_errors():
            card = import_reference(model, weights, out, labels, overwrite=overwrite)
        typer.echo(f"imported {weights} as '{card['model']}' ({card['num_classes']} classes, label order "
                   f"{card['training']['label_order']}, reference frontend) -> {out}")

    @app.command("predict")
    def predict_cmd(
        files: list[Path] = typer.Argument(..., help="Audio files (any sample rate, mono or stereo)."),
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint directory."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Use this model's shipped demo checkpoint."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {file, label, probabilities, logits}."),
        placement: str = typer.Option("auto", "--placement", help=PLACEMENT_HELP),
    ) -> None:
        """Top label, probabilities and raw logits of each file (placed in 1 s as the training clips were)."""
        with user_errors():
            check_placement(placement)
            if (checkpoint is None) == (model is None):
                raise UserError("Give exactly one of --checkpoint CKPT or --model NAME (a shipped demo checkpoint).")
            if model is not None:
                from kwsdeploy.train.checkpoint import demo_checkpoint_path

                checkpoint = str(demo_checkpoint_path(model))
            results = predict_files(checkpoint, files, placement)
        if as_json:
            typer.echo(json.dumps(results, indent=1))
            return
        for r in results:
            ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            typer.echo(f"{r['file']}: {r['label']} ({ranked[0][1]:.1%})")
            for note in r["notes"]:
                typer.echo(f"  note: {note}")
            typer.echo("  probabilities: " + ", ".join(f"{k} {v:.3f}" for k, v in ranked))
            typer.echo("  logits: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(r["labels"], r["logits"])))
