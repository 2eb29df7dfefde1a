"""Record one run of train_shipped_checkpoints.sh in benchmarks/results/demo_checkpoints.{json,md}.

Usage: python benchmarks/record_checkpoint.py MODEL RUN_DIR RESULTS_STEM SHIPPED(0|1) COMMAND
Reads RUN_DIR/{metrics.jsonl,config.json,best/} and RUN_DIR.{eval,old.eval,demo.eval}.json.
       python benchmarks/record_checkpoint.py --annotate CKPT PREPARED
writes into the card of CKPT where PREPARED's clips came from (corpus, extra trees, synthetic or not),
for checkpoints trained before the trainer recorded it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CORPUS = ("FSDD, all five speakers (real: train george, nicolas, yweweler; valid theo; test jackson, unseen) "
          "+ SYNTHETIC speakers (kwsdeploy data synth, 485 training voices of espeak-ng/flite/festival, "
          "training only) + _unknown_ (synthetic hard negatives and sentence cuts) + _silence_")


def main(model: str, run: str, results: str, shipped: str, command: str) -> None:
    from kwsdeploy.models.registry import count_params
    from kwsdeploy.train.checkpoint import load_checkpoint

    run_dir = Path(run)
    ev = json.loads(Path(f"{run}.eval.json").read_text())
    old = json.loads(Path(f"{run}.old.eval.json").read_text())
    demo = json.loads(Path(f"{run}.demo.eval.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(rows, key=lambda r: r["valid_acc"])  # first epoch of the maximum, like the trainer
    card = json.loads((run_dir / "best" / "card.json").read_text())
    entry = {
        "model": model, "params": count_params(load_checkpoint(run_dir / "best").model), "epochs": len(rows),
        "best_epoch": best["epoch"],
        "wall_time_s": round((run_dir / "test_metrics.json").stat().st_mtime - (run_dir / "config.json").stat().st_mtime, 1),
        "train_time_s": round(sum(r["epoch_time_s"] for r in rows), 1),
        "train_clips": card.get("training", {}).get("data", {}).get("train_clips"),
        "labels": card["labels"],
        "best_valid_acc": best["valid_acc"],
        "test_acc": ev["accuracy"], "test_macro_f1": ev["macro_f1"], "test_clips": ev.get("n"),
        "demo_test_acc": demo["accuracy"],
        "previous_test_acc": old["accuracy"] if old["accuracy"] >= 0 else None,
        "shipped": shipped == "1",
        "weights_bytes": (run_dir / "best" / "model.safetensors").stat().st_size,
        "command": command,
    }
    path = Path(results + ".json")
    data = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("corpus") != CORPUS:  # the table of the older (demo-corpus) checkpoints is replaced
        data = {"corpus": CORPUS, "models": {}, "notes": data.get("speakers_notes", [])}
    data["models"][model] = entry
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    write_md(data, Path(results + ".md"))
    print(json.dumps(entry))


def write_md(data: dict, md: Path) -> None:
    lines = [
        "# Shipped checkpoints", "",
        "Trained by `benchmarks/train_shipped_checkpoints.sh FSDD_ROOT` on " + data["corpus"] + "; the preset and "
        "overrides shown, deployable features, seed 0, CPU (2 cores shared by several sessions: wall times are "
        "indicative only). **Test = jackson, a speaker no training step "
        "saw**: all 500 of his FSDD recordings + 50 `_silence_` clips, from `kwsdeploy eval --checkpoint CKPT "
        "--data FSDD_REAL --split test` (FSDD_REAL: `prepare-gsc --keywords zero,...,nine` of the FSDD tree); "
        "'before' is the checkpoint shipped before, on the same clips; 'demo test' is the embedded corpus's "
        "110-clip test split (the older table's numbers). A checkpoint is shipped only if it beats 'before'.", "",
        "| model | params | epochs (best) | wall time | best valid | test acc (jackson, 550) | macro F1 | before | demo test (110) | shipped | command |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|",
    ]
    for e in data["models"].values():
        before = f"{e['previous_test_acc']:.2%}" if e.get("previous_test_acc") is not None else "-"
        lines.append(
            f"| {e['model']} | {e['params']:,} | {e['epochs']} ({e['best_epoch']}) | {e['wall_time_s'] / 60:.0f} min "
            f"| {e['best_valid_acc']:.2%} | **{e['test_acc']:.2%}** | {e['test_macro_f1']:.4f} | {before} "
            f"| {e['demo_test_acc']:.2%} | {'yes' if e['shipped'] else 'no'} | `{e['command']}` |")
    for note in data.get("notes", []):
        lines += ["", note]
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, md)


def portable_config(config: dict) -> dict:
    """A card's training config naming no machine path: what the run started from (--init) and learned
    from (--teacher), said in words."""
    out = dict(config)
    init = out.get("init_from")
    if init and os.path.isabs(init):
        out["init_from"] = _stage_in_words(init) or "the checkpoint shipped before (--init)"
    def in_words(path: str) -> str:
        return f"{_checkpoint_in_words(Path(path))} (--teacher)" if os.path.isabs(path) else path

    teacher = out.get("teacher")
    if isinstance(teacher, (list, tuple)):  # an ensemble: each member in words
        out["teacher"] = [in_words(t) for t in teacher]
    elif teacher:
        out["teacher"] = in_words(teacher)
    return out


def _stage_in_words(path: str) -> str | None:
    """`stage N of benchmarks/train_shipped_checkpoints.sh (...)` for a path in a `RUN.stageN` folder, else None."""
    import re

    found = re.search(r"\.stage(\d+)(?:[/\\]|$)", path)
    return f"stage {found.group(1)} of benchmarks/train_shipped_checkpoints.sh (its best checkpoint)" if found else None


def _checkpoint_in_words(path: Path) -> str:
    """`the shipped NAME checkpoint`, `stage 1 of ...`, or `a MODEL checkpoint` (its card's model)."""
    import kwsdeploy

    shipped = Path(kwsdeploy.__file__).resolve().parent / "assets" / "checkpoints"
    try:
        return f"the shipped {path.resolve().relative_to(shipped).parts[0]} checkpoint"
    except (ValueError, IndexError):
        pass
    stage = _stage_in_words(str(path))
    if stage:
        return stage
    try:
        model = json.loads((path / "card.json").read_text()).get("model")
    except (OSError, ValueError):
        model = None
    return f"a {model} checkpoint" if model else "a checkpoint"


def annotate(ckpt: str, prepared: str) -> None:
    from kwsdeploy.train.checkpoint import load_checkpoint, save_checkpoint
    from kwsdeploy.train.data_summary import data_sources

    ck = load_checkpoint(ckpt)
    training = dict(ck.card.get("training", {}))
    training["data"] = {**training.get("data", {}), **data_sources(prepared)}
    if "config" in training:
        training["config"] = portable_config(training["config"])
    save_checkpoint(ckpt, ck.model, ck.labels, ck.feature_config, model_config=ck.card.get("model_config"),
                    training=training, metrics=ck.card.get("metrics"), overwrite=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--annotate":
        annotate(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6:
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
