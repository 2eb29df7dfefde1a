"""`kwsdeploy train`: the reference recipe (`--preset reference`) or the quick `demo` preset, every
option overridable; writes a run directory with best/ and last/ checkpoints and metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli._options import float_list, with_options
from kwsdeploy.cli._train_options import GROUPS, RECIPE
from kwsdeploy.cli.common import UserError, user_errors


def register(app: typer.Typer) -> None:
    @app.command("train")
    @with_options(*GROUPS)
    def train_cmd(**o) -> None:
        """Train a model of the zoo; best checkpoint by validation accuracy, plus the last one."""
        from kwsdeploy.train.presets import teacher_spec
        from kwsdeploy.train.run import train

        with user_errors():
            if o["nproc"] != 1:
                _launch(o["nproc"])
            recipe = {key: o[name] for key, name in RECIPE.items()}
            machine = dict(device=o["device"], amp=o["amp"], num_workers=o["num_workers"], threads=o["threads"],
                           micro_batch=o["micro_batch"], eval_batch_size=o["eval_batch_size"],
                           compile=o["compile_model"], init_from=str(o["init"]) if o["init"] is not None else None,
                           teacher=teacher_spec(o["teacher"]))
            if machine["teacher"] is None and not o["resume"]:
                given = [f for f, k in (("--distill-weight", "distill_weight"), ("--distill-temperature",
                                                                                  "distill_temperature")) if o[k] is not None]
                if given:
                    raise UserError(f"{' and '.join(given)} shape the soft targets of a --teacher; add --teacher CKPT "
                                    "or leave them out.")
            cfg, recipe = _config(o["preset"], recipe, machine, o["model_config"], o["noise_snr_db"], o["speed"],
                                  o["tempo"])
            if o["resume"]:
                _check_resume(o["out"], given={**recipe, "teacher": machine["teacher"]})
            data = _training_data(o["data"])
            log = (lambda s: typer.echo(s, err=True)) if not o["as_json"] else None
            result = train(cfg, data, o["out"], resume=o["resume"], progress=o["progress"] and not o["as_json"],
                           stop_after=o["stop_after"], log=log)
        if result.rank == 0:  # under torchrun, rank 0 reports
            _report(result, o["as_json"])


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
        speed_range = tuple(float_list(speed))
        if len(speed_range) != 2:
            raise UserError(f"--speed must be 'LO,HI' (e.g. 0.85,1.15) or 'off', got {speed!r}.")
    tempo_range, tempo_p = None, None
    if tempo is not None and not _off(tempo):
        parts = float_list(tempo)
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


def _same_files(have, value) -> bool:
    """Whether two `teacher` values (a path or a list of paths) name the same files in the same order."""
    from kwsdeploy.train.presets import teacher_paths

    a, b = teacher_paths(have), teacher_paths(value)
    return len(a) == len(b) and all(os.path.abspath(x) == os.path.abspath(y) for x, y in zip(a, b))


def _check_resume(out: Path, given: dict) -> None:
    """--resume continues the saved run as it was configured: an option that would change it is refused
    (device, workers, AMP, threads and batching per rank may change)."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return  # train() says there is nothing to resume
    saved = json.loads(saved_path.read_text())
    saved.setdefault("teacher", None)  # a run from before --teacher had none
    differ = []
    for key, value in given.items():
        if value is None or key not in saved:
            continue
        have, value = saved[key], list(value) if isinstance(value, tuple) else value
        if key == "teacher" and have is not None and _same_files(have, value):
            continue  # the same file(s), spelled otherwise
        if have != value:
            differ.append(f"{_OPTION_OF.get(key, '--' + key.replace('_', '-'))} {value} (the run has {have})")
    if differ:
        raise UserError(f"--resume continues {out} as it was started; refusing {'; '.join(differ)}. Drop those "
                        "options, or start a new run in another --out.")
