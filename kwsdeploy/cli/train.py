"""`kwsdeploy train`: the reference recipe (`--preset reference`) or the quick `demo` preset, every
option overridable; writes a run directory with best/ and last/ checkpoints and metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli._options import MAX_THREADS, finite
from kwsdeploy.cli.common import UserError, user_errors


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Run directory (best/, last/, metrics.jsonl, curves.png)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name (default: the preset's)."),
        data: Optional[Path] = typer.Option(
            None, "--data", help="Prepared directory (labels.json + train/valid/test jsonl); default: the demo corpus."),
        preset: str = typer.Option("reference", "--preset", help="reference (TorchKWS/KWM recipe) | demo | speakers (demo + speaker augmentation)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", min=1, max=100_000),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, max=65_536),
        lr: Optional[float] = typer.Option(
            None, "--lr", callback=finite(0.0, 10.0, lo_open=True), help="Peak learning rate (AdamW)."),
        min_lr: Optional[float] = typer.Option(None, "--min-lr", callback=finite(0.0, 10.0), help="Cosine floor (at most --lr)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", callback=finite(0.0, 10.0)),
        warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", callback=finite(0.0, 100_000.0)),
        label_smoothing: Optional[float] = typer.Option(
            None, "--label-smoothing", callback=finite(0.0, 1.0, hi_open=True)),
        augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Waveform augmentation."),
        stream_context: Optional[float] = typer.Option(
            None, "--stream-context", callback=finite(0.0, 10.0),
            help="Seconds of another clip before each training clip, loss on the last second (causal KWM: "
                 "learns to stream without resets; 0: off)."),
        gain_db: Optional[float] = typer.Option(
            None, "--gain-db", callback=finite(0.0, 60.0), help="Random gain U(-G, +G) dB per training clip (0: off; applies with --no-augment too)."),
        noise_snr_db: Optional[str] = typer.Option(
            None, "--noise-snr-db",
            help="'LO,HI': mix noise at U(LO, HI) dB SNR relative to the clip instead of the absolute volume "
                 "(applies with --no-augment too); 'off' for the preset's absolute volume."),
        speed: Optional[str] = typer.Option(None, "--speed", help="'LO,HI': resample each clip by U(LO, HI) (tempo and pitch); 'off'."),
        tempo: Optional[str] = typer.Option(None, "--tempo", help="'LO,HI[,P]': with probability P (default 1) stretch time by a rate U(LO, HI), pitch kept; 'off'."),
        vtlp: Optional[float] = typer.Option(None, "--vtlp", callback=finite(0.0, 1.0, hi_open=True), help="Vocal-tract-length perturbation: warp U(1-A, 1+A) (0: off)."),
        reverb_p: Optional[float] = typer.Option(None, "--reverb-p", callback=finite(0.0, 1.0), help="Probability of a synthetic room reverb (0: off)."),
        eq_db: Optional[float] = typer.Option(None, "--eq-db", callback=finite(0.0, 40.0), help="Random smooth EQ of +-DB dB (0: off)."),
        telephone_p: Optional[float] = typer.Option(None, "--telephone-p", callback=finite(0.0, 1.0), help="Probability of a telephone band 300-3400 Hz (0: off)."),
        lowpass_p: Optional[float] = typer.Option(None, "--lowpass-p", callback=finite(0.0, 1.0), help="Probability of a low-pass at U(1.5, 4) kHz (0: off)."),
        shift: Optional[float] = typer.Option(None, "--shift", callback=finite(0.0, 1.0), help="Time shift U(-S, S) seconds, zero-filled (0: off)."),
        spec_augment: Optional[bool] = typer.Option(None, "--spec-augment/--no-spec-augment"),
        features: Optional[str] = typer.Option(
            None, "--features", help="deployable (causal fixed floor, default) | reference (per-clip top_db)."),
        n_mfcc: Optional[int] = typer.Option(None, "--n-mfcc", min=1, max=241, help="Default: the model card's input width."),
        model_config: Optional[str] = typer.Option(
            None, "--model-config", help='JSON object of constructor overrides, e.g. \'{"dropout": 0.1}\'.'),
        seed: Optional[int] = typer.Option(None, "--seed", min=0),
        device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
        amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA."),
        num_workers: Optional[int] = typer.Option(
            None, "--num-workers", min=0, max=256, help="DataLoader worker processes per rank (augmentation does not depend on it)."),
        nproc: int = typer.Option(
            1, "--nproc", min=1, max=1024, help="Ranks on this node: re-runs the command under torchrun (DDP; gloo on CPU, NCCL on "
                               "CUDA). Several nodes: torchrun --nnodes ... -m kwsdeploy train ..."),
        micro_batch: Optional[int] = typer.Option(
            None, "--micro-batch", min=1,
            help="Clips per rank per forward pass (default: --batch-size / ranks); smaller accumulates gradients, "
                 "the global batch stays --batch-size."),
        eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size", min=1, help="Clips per validation batch."),
        compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
        grad_clip: Optional[float] = typer.Option(
            None, "--grad-clip", callback=finite(0.0, 1e6), help="Clip the gradient norm (0: off)."),
        threads: Optional[int] = typer.Option(
            None, "--threads", min=1, max=MAX_THREADS, help="torch CPU threads (default: torch's)."),
        init: Optional[Path] = typer.Option(
            None, "--init", help="Start from this checkpoint of the same model (tensors copied by name, classifier rows by label)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, hidden=True),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
    ) -> None:
        """Train a model of the zoo; best checkpoint by validation accuracy, plus the last one."""
        from kwsdeploy.train.trainer import train

        with user_errors():
            if nproc != 1:
                _launch(nproc)
            recipe = dict(  # what defines the run: --resume refuses a change to any of these
                model=model, epochs=epochs, batch_size=batch_size, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
                warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, augment=augment,
                spec_augment=spec_augment, stream_context_s=stream_context, gain_db=gain_db, features=features,
                n_mfcc=n_mfcc, seed=seed, grad_clip=grad_clip, vtlp=vtlp, reverb_p=reverb_p, eq_db=eq_db,
                telephone_p=telephone_p, shift_s=shift, lowpass_p=lowpass_p,
            )
            machine = dict(device=device, amp=amp, num_workers=num_workers, threads=threads, micro_batch=micro_batch,
                           eval_batch_size=eval_batch_size, compile=compile_model,
                           init_from=str(init) if init is not None else None)
            cfg, recipe = _config(preset, recipe, machine, model_config, noise_snr_db, speed, tempo)
            if resume:
                _check_resume(out, given=recipe)
            data = _training_data(data)
            log = (lambda s: typer.echo(s, err=True)) if not as_json else None
            result = train(cfg, data, out, resume=resume, progress=progress and not as_json,
                           stop_after=stop_after, log=log)
        if result.rank == 0:  # under torchrun, rank 0 reports
            _report(result, as_json)


def _off(value: Optional[str]) -> bool:
    return value is not None and value.strip().lower() == "off"


def _config(preset: str, recipe: dict, machine: dict, model_config: Optional[str], noise_snr_db: Optional[str],
            speed: Optional[str], tempo: Optional[str] = None):
    """The preset with the command line's overrides, and the recipe options as given (for --resume)."""
    import dataclasses

    from kwsdeploy.train.presets import get_preset

    cfg = get_preset(preset)
    mc = None
    if model_config is not None:
        try:
            mc = json.loads(model_config)
        except json.JSONDecodeError as exc:
            raise UserError(f"--model-config is not valid JSON ({exc.msg}); give an object like '{{\"k\": 1}}'.")
        if not isinstance(mc, dict):
            raise UserError("--model-config must be a JSON object.")
    snr = None
    if noise_snr_db is not None and not _off(noise_snr_db):
        from kwsdeploy.data.augment import parse_snr_range

        try:
            snr = parse_snr_range(noise_snr_db)
        except ValueError as exc:
            raise UserError(f"--noise-snr-db: {exc}")
    speed_range = None
    if speed is not None and not _off(speed):
        try:
            speed_range = tuple(float(v) for v in speed.split(","))
        except ValueError:
            speed_range = ()
        if len(speed_range) != 2:
            raise UserError(f"--speed must be 'LO,HI' (e.g. 0.85,1.15) or 'off', got {speed!r}.")
    tempo_range, tempo_p = None, None
    if tempo is not None and not _off(tempo):
        try:
            parts = [float(v) for v in tempo.split(",")]
        except ValueError:
            parts = []
        if len(parts) not in (2, 3):
            raise UserError(f"--tempo must be 'LO,HI' or 'LO,HI,P' (e.g. 0.6,1.2,0.5) or 'off', got {tempo!r}.")
        tempo_range, tempo_p = (parts[0], parts[1]), (parts[2] if len(parts) == 3 else 1.0)
    recipe = {**recipe, "model_config": mc, "noise_snr_db": snr, "speed_range": speed_range,
              "tempo_range": tempo_range, "tempo_p": tempo_p}
    if recipe["model"] is not None:
        from kwsdeploy.models.registry import get_card

        recipe["model"] = get_card(recipe["model"]).name
    cfg = cfg.with_overrides(**recipe, **machine)
    if _off(noise_snr_db):
        cfg = dataclasses.replace(cfg, noise_snr_db=None)  # with_overrides ignores None
    if _off(speed):
        cfg = dataclasses.replace(cfg, speed_range=None)
    if _off(tempo):
        cfg = dataclasses.replace(cfg, tempo_range=None, tempo_p=0.0)
    if cfg.min_lr > cfg.lr:
        raise UserError(f"--min-lr {cfg.min_lr:g} is above the peak --lr {cfg.lr:g}: the cosine floor must be "
                        "at most the peak.")
    return cfg, recipe


def _training_data(data: Optional[Path]) -> Path:
    """--data, or the embedded demo corpus (said once, by rank 0); it must be a prepared directory."""
    if data is None:
        from kwsdeploy.data.demo import demo_corpus_dir

        data = demo_corpus_dir()
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 says it
            typer.echo(f"no --data given: training on the embedded demo corpus ({data})", err=True)
    if not (data / "labels.json").is_file():
        raise UserError(f"{data} is not a prepared directory (no labels.json); run 'kwsdeploy data' first.")
    return data


def _report(result, as_json: bool) -> None:
    """Where the checkpoints are (and the test metrics when the run wrote them)."""
    summary = {
        "out": str(result.out_dir), "best": str(result.best_dir), "last": str(result.last_dir),
        "best_epoch": result.best_epoch, "best_valid_acc": result.best_valid_acc,
        "epochs_run": len(result.history), "last_epoch": result.history[-1] if result.history else None,
    }
    test_path = result.out_dir / "test_metrics.json"
    if test_path.is_file():
        tm = json.loads(test_path.read_text())
        summary.update(test_acc=tm["accuracy"], test_macro_f1=tm["macro_f1"])
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        typer.echo(f"best checkpoint (epoch {result.best_epoch}): {result.best_dir}; last: {result.last_dir}")


def _launch(nproc: int) -> None:
    """`--nproc N`: run this very command under torchrun with N ranks, then exit with its status."""
    import sys

    from kwsdeploy.train.launch import inside_torchrun, relaunch

    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}.")
    if inside_torchrun():
        raise UserError("--nproc starts torchrun itself; under torchrun leave it out (torchrun sets the ranks).")
    args = sys.argv[1:]
    if "train" not in args or not any(a == "--nproc" or a.startswith("--nproc=") for a in args):
        raise UserError("--nproc re-runs the command line; run 'kwsdeploy train ... --nproc N' from a shell.")
    raise typer.Exit(relaunch(nproc, args))


_OPTION_OF = {"stream_context_s": "--stream-context", "speed_range": "--speed", "shift_s": "--shift",
              "tempo_range": "--tempo", "tempo_p": "--tempo"}


def _check_resume(out: Path, given: dict) -> None:
    """--resume continues the saved run as it was configured: an option that would change it is refused
    (device, workers, AMP, threads and batching per rank may change)."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return  # train() says there is nothing to resume
    saved = json.loads(saved_path.read_text())
    differ = []
    for key, value in given.items():
        if value is None or key not in saved:
            continue
        have, value = saved[key], list(value) if isinstance(value, tuple) else value
        if have != value:
            differ.append(f"{_OPTION_OF.get(key, '--' + key.replace('_', '-'))} {value} (the run has {have})")
    if differ:
        raise UserError(f"--resume continues {out} as it was started; refusing {'; '.join(differ)}. Drop those "
                        "options, or start a new run in another --out.")
