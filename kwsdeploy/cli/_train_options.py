"""The options of `kwsdeploy train`, in groups (run, schedule, augmentation, features and model,
machine, progress), in the order `--help` lists them; `train_cmd` takes them via `with_options`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from kwsdeploy.cli._options import MAX_THREADS, OptionGroup, finite

RUN: OptionGroup = {
    "out": (Path, typer.Option(..., "--out", "-o", help="Run directory (best/, last/, metrics.jsonl, curves.png).")),
    "model": (Optional[str], typer.Option(None, "--model", "-m", help="Registry name (default: the preset's).")),
    "data": (Optional[Path], typer.Option(
        None, "--data", help="Prepared directory (labels.json + train/valid/test jsonl); default: the demo corpus.")),
    "preset": (str, typer.Option("reference", "--preset", help="reference (TorchKWS/KWM recipe) | demo | speakers (demo + speaker augmentation).")),
}

SCHEDULE: OptionGroup = {
    "epochs": (Optional[int], typer.Option(None, "--epochs", min=1, max=100_000)),
    "batch_size": (Optional[int], typer.Option(None, "--batch-size", min=1, max=65_536)),
    "lr": (Optional[float], typer.Option(
        None, "--lr", callback=finite(0.0, 10.0, lo_open=True), help="Peak learning rate (AdamW).")),
    "min_lr": (Optional[float], typer.Option(None, "--min-lr", callback=finite(0.0, 10.0), help="Cosine floor (at most --lr).")),
    "weight_decay": (Optional[float], typer.Option(None, "--weight-decay", callback=finite(0.0, 10.0))),
    "warmup_epochs": (Optional[float], typer.Option(None, "--warmup-epochs", callback=finite(0.0, 100_000.0))),
    "label_smoothing": (Optional[float], typer.Option(
        None, "--label-smoothing", callback=finite(0.0, 1.0, hi_open=True))),
}

AUGMENTATION: OptionGroup = {
    "augment": (Optional[bool], typer.Option(None, "--augment/--no-augment", help="Waveform augmentation.")),
    "stream_context": (Optional[float], typer.Option(
        None, "--stream-context", callback=finite(0.0, 10.0),
        help="Seconds of another clip before each training clip, loss on the last second (causal KWM: "
             "learns to stream without resets; 0: off).")),
    "gain_db": (Optional[float], typer.Option(
        None, "--gain-db", callback=finite(0.0, 60.0), help="Random gain U(-G, +G) dB per training clip (0: off; applies with --no-augment too).")),
    "noise_snr_db": (Optional[str], typer.Option(
        None, "--noise-snr-db",
        help="'LO,HI': mix noise at U(LO, HI) dB SNR relative to the clip instead of the absolute volume "
             "(applies with --no-augment too); 'off' for the preset's absolute volume.")),
    "speed": (Optional[str], typer.Option(None, "--speed", help="'LO,HI': resample each clip by U(LO, HI) (tempo and pitch); 'off'.")),
    "tempo": (Optional[str], typer.Option(None, "--tempo", help="'LO,HI[,P]': with probability P (default 1) stretch time by a rate U(LO, HI), pitch kept; 'off'.")),
    "vtlp": (Optional[float], typer.Option(None, "--vtlp", callback=finite(0.0, 1.0, hi_open=True), help="Vocal-tract-length perturbation: warp U(1-A, 1+A) (0: off).")),
    "reverb_p": (Optional[float], typer.Option(None, "--reverb-p", callback=finite(0.0, 1.0), help="Probability of a synthetic room reverb (0: off).")),
    "eq_db": (Optional[float], typer.Option(None, "--eq-db", callback=finite(0.0, 40.0), help="Random smooth EQ of +-DB dB (0: off).")),
    "telephone_p": (Optional[float], typer.Option(None, "--telephone-p", callback=finite(0.0, 1.0), help="Probability of a telephone band 300-3400 Hz (0: off).")),
    "lowpass_p": (Optional[float], typer.Option(None, "--lowpass-p", callback=finite(0.0, 1.0), help="Probability of a low-pass at 0.7-4 kHz, 6-48 dB an octave (0: off).")),
    "gate_p": (Optional[float], typer.Option(None, "--gate-p", callback=finite(0.0, 1.0), help="Probability of a noise gate that drops quiet fricatives and onsets (0: off).")),
    "fricative_p": (Optional[float], typer.Option(None, "--fricative-p", callback=finite(0.0, 1.0), help="Probability of the fricative frames softened by 15-40 dB, loud or not (0: off).")),
    "neighbour_p": (Optional[float], typer.Option(None, "--neighbour-p", callback=finite(0.0, 1.0), help="Probability of another clip's end (or start) mixed into the clip's window, as in a stream (0: off).")),
    "shift": (Optional[float], typer.Option(None, "--shift", callback=finite(0.0, 1.0), help="Time shift U(-S, S) seconds, zero-filled (0: off).")),
    "spec_augment": (Optional[bool], typer.Option(None, "--spec-augment/--no-spec-augment")),
}

FEATURES_AND_MODEL: OptionGroup = {
    "features": (Optional[str], typer.Option(
        None, "--features", help="deployable (causal fixed floor, default) | reference (per-clip top_db).")),
    "n_mfcc": (Optional[int], typer.Option(None, "--n-mfcc", min=1, max=241, help="Default: the model card's input width.")),
    "model_config": (Optional[str], typer.Option(
        None, "--model-config", help='JSON object of constructor overrides, e.g. \'{"dropout": 0.1}\'.')),
    "seed": (Optional[int], typer.Option(None, "--seed", min=0)),
}

MACHINE: OptionGroup = {  # --grad-clip sits here in --help; it is part of the recipe
    "device": (Optional[str], typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N.")),
    "amp": (Optional[bool], typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA.")),
    "num_workers": (Optional[int], typer.Option(
        None, "--num-workers", min=0, max=256, help="DataLoader worker processes per rank (augmentation does not depend on it).")),
    "nproc": (int, typer.Option(
        1, "--nproc", min=1, max=1024, help="Ranks on this node: re-runs the command under torchrun (DDP; gloo on CPU, NCCL on "
                                            "CUDA). Several nodes: torchrun --nnodes ... -m kwsdeploy train ...")),
    "micro_batch": (Optional[int], typer.Option(
        None, "--micro-batch", min=1,
        help="Clips per rank per forward pass (default: --batch-size / ranks); smaller accumulates gradients, "
             "the global batch stays --batch-size.")),
    "eval_batch_size": (Optional[int], typer.Option(None, "--eval-batch-size", min=1, help="Clips per validation batch.")),
    "compile_model": (Optional[bool], typer.Option(None, "--compile/--no-compile", help="torch.compile the model.")),
    "grad_clip": (Optional[float], typer.Option(
        None, "--grad-clip", callback=finite(0.0, 1e6), help="Clip the gradient norm (0: off).")),
    "threads": (Optional[int], typer.Option(
        None, "--threads", min=1, max=MAX_THREADS, help="torch CPU threads (default: the command's, kwsdeploy --threads, 1).")),
}

RUN_CONTROL: OptionGroup = {
    "init": (Optional[Path], typer.Option(
        None, "--init", help="Start from this checkpoint of the same model (tensors copied by name, classifier rows by label).")),
    "teacher": (Optional[List[Path]], typer.Option(
        None, "--teacher", help="Distil from this checkpoint (any model of the zoo with the same labels): its soft "
                                "targets join the loss. Repeat it for an ensemble (the mean of their soft targets).")),
    "distill_weight": (Optional[float], typer.Option(
        None, "--distill-weight", callback=finite(0.0, 1.0), help="Share of the loss from the teacher's soft targets (default 0.5).")),
    "distill_temperature": (Optional[float], typer.Option(
        None, "--distill-temperature", callback=finite(0.01, 100.0), help="Softmax temperature of the soft targets (default 2).")),
    "resume": (bool, typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")),
    "progress": (bool, typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")),
    "stop_after": (Optional[int], typer.Option(None, "--stop-after", min=1, hidden=True)),
    "as_json": (bool, typer.Option(False, "--json", help="Print a JSON summary at the end.")),
}

GROUPS = (RUN, SCHEDULE, AUGMENTATION, FEATURES_AND_MODEL, MACHINE, RUN_CONTROL)

# What defines a run (--resume refuses a change to any of these): config field -> option parameter,
# in the order a refusal lists them.
RECIPE = {k: k for k in ("model", "epochs", "batch_size", "lr", "min_lr", "weight_decay", "warmup_epochs",
                         "label_smoothing", "augment", "spec_augment")}
RECIPE.update(stream_context_s="stream_context", gain_db="gain_db", features="features", n_mfcc="n_mfcc", seed="seed",
              grad_clip="grad_clip", vtlp="vtlp", reverb_p="reverb_p", eq_db="eq_db", telephone_p="telephone_p",
              shift_s="shift", lowpass_p="lowpass_p", gate_p="gate_p", fricative_p="fricative_p", neighbour_p="neighbour_p", distill_weight="distill_weight",
              distill_temperature="distill_temperature")
