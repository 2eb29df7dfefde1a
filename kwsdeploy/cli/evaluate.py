"""`kwsdeploy eval`: top-1, macro F1 over the whole split, per-class recall and the confusion matrix
of a checkpoint on a prepared split (`--data`) or on a folder of label-named subfolders (`--folder`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from kwsdeploy.cli.common import UserError, user_errors

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
PLACEMENT_HELP = ("How a clip fills the 1 s window: centre = as the training clips were made (quiet edges "
                  "trimmed, word centred, a long clip's loudest second); pad = zero-pad at the end, cut after 1 s "
                  "(the reference's); auto = pad for imported reference checkpoints, else centre.")


def check_placement(placement: str) -> None:
    """A one-line UserError for an unknown --placement."""
    from kwsdeploy.placement import PLACEMENTS

    if placement not in PLACEMENTS:
        raise UserError(f"--placement {placement!r} is not one of {', '.join(PLACEMENTS)}.")


def folder_clips(folder: Path, labels: list[str], feature_config, placement: str = "centre"
                 ) -> tuple[list, list[int], list[str]]:
    """Waveforms (1 s at the model's rate, placed as `placement` says), label indices and notes."""
    from kwsdeploy.audio import load_audio
    from kwsdeploy.placement import placed, placement_note

    if not folder.is_dir():
        raise UserError(f"--folder {folder} is not a directory; pass a folder with one subfolder of audio files per label.")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise UserError(f"{folder} has no subfolders; put each label's audio files in a folder named after the label.")
    unknown = [p.name for p in subdirs if p.name not in labels]
    if unknown:
        raise UserError(f"{folder} has label folder(s) {unknown} that the model does not know; "
                        f"its labels are: {', '.join(labels)}.")
    waves, targets, notes = [], [], []
    resampled = 0
    lengths = []
    for sub in subdirs:
        for f in sorted(p for p in sub.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            x, info = load_audio(f, feature_config.sample_rate)
            resampled += info.original_rate != feature_config.sample_rate
            lengths.append(len(x))
            waves.append(placed(x, feature_config.clip_samples, placement))
            targets.append(labels.index(sub.name))
    if not waves:
        raise UserError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) in its label folders.")
    if resampled:
        notes.append(f"{resampled} file(s) resampled to {feature_config.sample_rate} Hz")
    notes.append(placement_note(lengths, feature_config.clip_samples, placement, feature_config.sample_rate))
    return waves, targets, notes


def evaluate_checkpoint(checkpoint: str, data: Optional[Path], split: str, folder: Optional[Path],
                        batch_size: int = 256, device: str = "cpu", placement: str = "auto") -> dict[str, Any]:
    """Metrics of a checkpoint on a prepared split or a folder; the model's labels define the classes."""
    import numpy as np

    from kwsdeploy.train.checkpoint import load_checkpoint
    from kwsdeploy.train.evaluate import classification_metrics, evaluate_dataset, predict_logits

    ck = load_checkpoint(checkpoint)
    source: dict[str, Any]
    if folder is not None:
        from kwsdeploy.placement import resolve_placement

        placement = resolve_placement(placement, ck.card)
        waves, targets, notes = folder_clips(folder, ck.labels, ck.feature_config, placement)
        logits = predict_logits(ck.model, ck.feature_config, np.stack(waves), batch_size, device)
        metrics = classification_metrics(targets, logits.argmax(1).numpy(), ck.labels)
        source = {"folder": str(folder), "notes": notes, "placement": placement}
    else:
        from kwsdeploy.train.evaluate import prepared_split

        ds = prepared_split(data, split, ck.labels)
        metrics = evaluate_dataset(ck.model, ck.feature_config, ds, ck.labels, batch_size, device)
        source = {"data": str(data), "split": split}
    metrics.update(checkpoint=str(ck.path), model=ck.card["model"], **source)
    return metrics


def evaluate_bundle(bundle: Path, precision: str, data: Optional[Path], split: str, folder: Optional[Path],
                    placement: str) -> dict[str, Any]:
    """`eval --bundle DIR --precision P`: top-1, macro F1, per-class recall and confusion of one file of
    a bundle through the ONNX Runtime runner (each clip streamed from the zero state, as a device runs
    it); agreement with the bundle's fp32 file; with --data and a step graph, stream detection on the
    split's clips joined by noise."""
    import numpy as np

    from kwsdeploy.calibration.report import EvalData, evaluate_file, held_out_data
    from kwsdeploy.manifest import PRECISIONS
    from kwsdeploy.runtime.bundle import load_bundle
    from kwsdeploy.train.evaluate import classification_metrics

    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    b = load_bundle(bundle)
    m = b.manifest
    mode = "step" if any(f.mode == "step" for f in m.files) else "offline"
    mf = m.file(mode, precision)
    labels = list(m.labels)
    notes: list[str] = []
    if folder is not None:
        from kwsdeploy.placement import resolve_placement

        placement = resolve_placement(placement, dict(m.checkpoint))
        waves, targets, notes = folder_clips(folder, labels, m.feature_config, placement)
        ev = EvalData(np.stack(waves).astype(np.float32), np.array(targets), str(folder))
        source: dict[str, Any] = {"folder": str(folder), "placement": placement}
    else:
        from kwsdeploy.data.noise import background_noise

        ev = held_out_data(Path(data), labels, split, noise=background_noise(Path(data)))
        source = {"data": str(data), "split": split}
    ref = None
    if precision != "fp32" and any(f.mode == mode and f.precision == "fp32" for f in m.files):
        fp32 = m.file(mode, "fp32")
        ref = evaluate_file(b.path / fp32.path, mode, fp32.input_kind, EvalData(ev.audio, ev.targets, ev.source),
                            labels, m.feature_config)["predictions"]
    row = evaluate_file(b.path / mf.path, mode, mf.input_kind, ev, labels, m.feature_config, m.stream,
                        m.detection_settings, np.array(ref) if ref is not None else None)
    metrics = classification_metrics(ev.targets.tolist(), row["predictions"], labels)
    metrics.update(model=m.model.get("name", "?"), checkpoint=str(b.path / mf.path), bundle=str(b.path),
                   precision=precision, file=mf.path, mode=mode, notes=notes, **source)
    if "agreement_with_fp32" in row:
        metrics["agreement_with_fp32"] = row["agreement_with_fp32"]
    if "stream" in row:
        metrics["stream"] = row["stream"]
    return metrics


def register(app: typer.Typer) -> None:
    """Add `eval` to the CLI."""

    @app.command("eval")
    def eval_cmd(
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint directory."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Use this model's shipped demo checkpoint."),
        bundle: Optional[Path] = typer.Option(
            None, "--bundle", help="Exported bundle: evaluate its graph of --precision through ONNX Runtime."),
        precision: str = typer.Option("fp32", "--precision", help="With --bundle: fp32, fp16, int8-tensorrt or int8-cpu."),
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared directory."),
        split: str = typer.Option("test", "--split", help="train | valid | test (with --data)."),
        folder: Optional[Path] = typer.Option(
            None, "--folder", help="Folder of label-named subfolders of audio files (any rate and length)."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
        plot: Optional[Path] = typer.Option(
            None, "--plot", help="Write the confusion matrix PNG here (needs matplotlib)."),
        batch_size: int = typer.Option(256, "--batch-size", min=1, max=65_536),
        device: str = typer.Option("cpu", "--device"),
        placement: str = typer.Option("auto", "--placement", help=PLACEMENT_HELP),
    ) -> None:
        """Accuracy, macro F1, per-class recall and confusion matrix of a checkpoint."""
        from kwsdeploy.train.evaluate import format_report, plot_confusion

        with user_errors():
            if sum(x is not None for x in (checkpoint, model, bundle)) != 1:
                raise UserError("Give exactly one of --checkpoint CKPT, --model NAME (a shipped demo checkpoint) "
                                "or --bundle DIR.")
            if (data is None) == (folder is None):
                raise UserError("Give exactly one of --data PREPARED_DIR or --folder DIR.")
            if model is not None:
                from kwsdeploy.train.checkpoint import demo_checkpoint_path

                checkpoint = str(demo_checkpoint_path(model))
            check_placement(placement)
            if bundle is not None:
                metrics = evaluate_bundle(bundle, precision, data, split, folder, placement)
            else:
                metrics = evaluate_checkpoint(checkpoint, data, split, folder, batch_size, device, placement)
            png = None
            if plot is not None:
                png = plot_confusion(metrics, plot, title=f"{metrics['model']}: {metrics['accuracy']:.2%} top-1")
                if png is None:
                    typer.echo("matplotlib is not installed: no confusion PNG (pip install 'kwsdeploy[plot]')",
                               err=True)
        if png is not None:
            metrics["confusion_png"] = str(png)
        if as_json:
            typer.echo(json.dumps(metrics, indent=1))
            return
        where = metrics.get("folder") or f"{metrics['data']} [{metrics['split']}]"
        typer.echo(f"{metrics['model']} ({metrics['checkpoint']}) on {where}")
        for note in metrics.get("notes", []):
            typer.echo(f"note: {note}")
        if "precision" in metrics:
            agree = metrics.get("agreement_with_fp32")
            stream = metrics.get("stream")
            typer.echo(f"precision {metrics['precision']} ({metrics['file']}, ONNX Runtime step runner)"
                       + (f"; agrees with fp32 on {agree:.1%} of clips" if agree is not None else "")
                       + (f"; stream detection {stream['accuracy']:.1%}, {stream['false_alarms_per_hour']:.0f} FA/h"
                          if stream else ""))
        typer.echo(format_report(metrics))
        if png is not None:
            typer.echo(f"confusion matrix: {png}")
