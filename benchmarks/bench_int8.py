"""INT8 targets, measured: `kwsdeploy export --int8` on every shipped demo checkpoint (accuracy on the
unseen speaker through the ONNX Runtime step runner, stream detection, file and weight sizes) and the
cpu recipe's speed against fp32 (1 thread, batch 1 and 64, side by side), plus kwm-causal-192-12 with
random weights (speed and size only: it has no trained checkpoint).

    python benchmarks/bench_int8.py [--models a,b] [--out benchmarks/results/int8] [--calib-clips 64]
        [--eval-data PREPARED_DIR --eval-split test --eval-stream-clips 0]

Accuracy is measured on the embedded demo corpus' test split (110 clips, one clip = 0.9 points) unless
--eval-data names a prepared directory (e.g. a prepared FSDD tree: all 550 clips of its test speaker).

Writes <out>.json and <out>.md. Targets: INT8 top-1 within 0.5 points of fp32 and stream detection
within 2 points; tensorrt weights <= 0.3x fp32 for models over 50k parameters; the cpu recipe never
slower than fp32, and >= 1.5x for the kwm-causal-192-12 step.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from int8_tables import check_targets, markdown  # same folder: the targets and int8.md's tables

DATA_FLAGS = ("--calib-data", "--eval-data")


def shown_argv(argv: list[str]) -> list[str]:
    """The command as recorded in committed results: data directories as PREPARED_DIR, other absolute
    paths as PATH (results name no machine path)."""
    out, hide = [], False
    for a in argv:
        flag, eq, value = a.partition("=")
        if hide:
            out.append("PREPARED_DIR")
        elif flag in DATA_FLAGS and eq:
            out.append(f"{flag}=PREPARED_DIR")
        elif (value if eq else a).startswith(("/", "~")):
            out.append(f"{flag}=PATH" if eq else "PATH")
        else:
            out.append(a)
        hide = not hide and a in DATA_FLAGS
    return out


def export_one(name: str, out: Path, clips: int | None, method: str | None,
               targets: tuple[str, ...] = ("tensorrt", "cpu"), **int8) -> dict:
    """`kwsdeploy export --model NAME --int8 --target ...` in process; the manifest's report rows and the files.
    `clips`/`method` None: as the CLI without them (the checkpoint's preset, else the defaults). `int8`: more
    Int8Options fields (calib_data, eval_data, eval_split, eval_stream_clips, ...)."""
    from rich.console import Console

    from kwsdeploy.calibration.passes import Int8Options
    from kwsdeploy.cli._export_int8 import export_int8
    from kwsdeploy.exporters.inputs import load_export_model as _load_model, parity_clips
    from kwsdeploy.models.registry import count_params

    m, labels, fc, info, accuracy, _ = _load_model(name, None, False)
    build = dict(model=m, labels=labels, feature_config=fc, parity=parity_clips(fc), modes=("step",), frontend=False,
                 precisions=("fp32",), hop_frames=None, checkpoint=info, accuracy=accuracy, exporter="legacy")
    t0 = time.perf_counter()
    given = {k: v for k, v in (("clips", clips), ("method", method)) if v is not None}
    result, report = export_int8(out, True, [], Int8Options(targets, explicit=tuple(given), **given, **int8),
                                 build, Console(file=sys.stderr))
    rows = {r["precision"]: r for r in report["step"]["rows"]}
    files = result.manifest.calibration.extra["files"]
    cal = result.manifest.calibration
    row = {"model": name, "params": count_params(m), "export_seconds": round(time.perf_counter() - t0, 1),
           "bundle": result.path, "rows": rows, "weights_sha256": (info or {}).get("weights_sha256", ""),
           "calibration": {"clips": cal.clips, "method": cal.method, "percentile": cal.extra.get("percentile"),
                           "keep_float": cal.extra.get("keep_float", []), "preset": cal.extra.get("preset", ""),
                           **({"cpu": cal.extra["cpu"]} if "cpu" in cal.extra else {})}}
    if "model.int8-cpu.onnx" in files:
        row["cpu_settings"] = files["model.int8-cpu.onnx"]["settings"]
    if "model.int8-tensorrt.onnx" in files:
        row["tensorrt_gate"] = _stream_gate(files["model.int8-tensorrt.onnx"])
    return row


def merge_row(new: dict, old: dict | None, timed: bool) -> dict:
    """A model re-measured for some recipes: the other recipe's rows, settings and timings from `old`; an
    untimed re-measured graph loses its old timing (it changed)."""
    if old is None:
        return new
    out = {**old, **new, "rows": {**old["rows"], **new["rows"]}, "calibration": merge_calibration(new, old)}
    sp = dict(old.get("seconds_per_step", {}))
    if timed:
        sp.update(new.get("seconds_per_step", {}))
    else:
        for p in new["rows"]:
            if p.startswith("int8"):
                sp.pop(p, None)
    out["seconds_per_step"] = sp
    return out


def merge_calibration(new: dict, old: dict) -> dict | None:
    """The calibration of a merged row: a recipe re-measured alone calibrates with its own settings (the
    cpu one's, a preset's `cpu`, are then its export's top-level record), so the other recipe's stay."""
    cal, before = new.get("calibration"), old.get("calibration")
    if not cal or not before:
        return cal or before
    if "int8-tensorrt" not in new["rows"] and "int8-tensorrt" in old["rows"]:  # cpu alone
        from kwsdeploy.calibration.passes import CPU_FIELDS  # the four settings a calibration record carries

        shared = {k: v for k, v in before.items() if k != "cpu"}
        own = {k: cal.get(k) for k in CPU_FIELDS}
        return {**shared, "preset": cal.get("preset", ""),
                **({"cpu": own} if own != {k: shared.get(k) for k in CPU_FIELDS} else {})}
    if "int8-cpu" not in new["rows"] and "cpu" in before:  # tensorrt alone: the cpu recipe's own stay
        return {**cal, "cpu": before["cpu"]}
    return cal


def _stream_gate(rec: dict) -> dict:
    """The tensorrt recipe's free-running stream SQNR per round and the layers its stream gate kept float."""
    s = rec["settings"]
    return {"stream_sqnr_floor_db": s.get("stream_sqnr_floor_db"), "stream_sqnr_rounds_db": s.get("stream_sqnr_rounds_db"),
            "kept_float_by_stream_gate": {k: v for k, v in rec["float_layers"].items() if "stream floor" in v}}


def time_side_by_side(graphs: dict[str, bytes], round_seconds: float, rounds: int) -> dict:
    """Seconds per step at batch 1 and 64 (1 thread), the graphs interleaved, fastest round kept."""
    from kwsdeploy.calibration.cpu import time_graphs

    t = time_graphs(graphs, (1, 64), round_seconds=round_seconds, rounds=rounds)
    return {n: {str(b): s for b, s in x.seconds.items()} for n, x in t.items()}


def reference_size(clips: int, method: str, round_seconds: float, rounds: int) -> dict:
    """kwm-causal-192-12, random weights (seed 0): tensorrt weights ratio and cpu recipe speed."""
    import torch

    from kwsdeploy.calibration.data import CalibrationClips
    from kwsdeploy.calibration.passes import CalibrationSource
    from kwsdeploy.calibration.report import model_weight_bytes
    from kwsdeploy.exporters.inputs import parity_clips
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.exporters.bundle import build_bundle
    from kwsdeploy.models.registry import count_params, create

    torch.manual_seed(0)
    model = create("kwm-causal-192-12").eval()
    fc = FeatureConfig.deployable(40)
    ds = KwsDataset(demo_corpus_dir(), "train")
    picks = np.random.default_rng(0).permutation(len(ds))[:clips]
    audio = np.stack([ds.clip(int(i)) for i in picks]).astype(np.float32)
    source = CalibrationSource(CalibrationClips(audio, "demo corpus", "train", tuple(int(i) for i in picks), 0), fc, method)
    manifest, blobs, _ = build_bundle(
        model=model, labels=[f"class{i}" for i in range(12)], feature_config=fc,
        parity=parity_clips(fc), precisions=("fp32", "int8-tensorrt", "int8-cpu"), exporter="legacy",
        calibration_data=source, checkpoint={"source": "random-init (seed 0)", "random_init": True})
    names = {f.precision: f.path for f in manifest.files}
    speed = time_side_by_side({p: blobs[names[p]] for p in ("fp32", "int8-cpu", "int8-tensorrt")}, round_seconds, rounds)
    w32 = model_weight_bytes(blobs[names["fp32"]])
    settings = source.results[names["int8-cpu"]].settings
    return {"model": "kwm-causal-192-12 (random weights)", "params": count_params(model),
            "weights_vs_fp32": {p: round(model_weight_bytes(blobs[names[p]]) / w32, 4) for p in ("int8-tensorrt", "int8-cpu")},
            "bytes": {p: len(blobs[names[p]]) for p in names}, "seconds_per_step": speed,
            "cpu_chosen": settings["chosen"], "cpu_export_speed_vs_fp32": settings["speed_vs_fp32"],
            "clock": "calling thread's CPU time (calibration.cpu.time_graphs at 1 thread)"}


def _data_name(path: Path | None, name: str, default: str) -> str:
    """What the results call a data directory: never its path (results are committed)."""
    return default if path is None else (name or Path(path).name)


def _profile(out: Path) -> dict | None:
    """<out>_cpu_profile.json (written by profile_int8_cpu.py --out), if there is one."""
    p = Path(f"{out}_cpu_profile.json")
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="Comma list (default: every shipped demo checkpoint).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8"))
    ap.add_argument("--calib-clips", type=int, default=None, help="Default: the checkpoint's preset, else 64.")
    ap.add_argument("--calib-method", default=None, help="Default: the checkpoint's preset, else minmax.")
    ap.add_argument("--round-seconds", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calib-data", type=Path, default=None,
                    help="Calibration clips (a prepared dir's train split or a folder); default: the demo corpus'.")
    ap.add_argument("--eval-data", type=Path, default=None,
                    help="Held-out clips: a prepared dir (its --eval-split); default: the demo corpus' test split.")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--eval-stream-clips", type=int, default=40, help="Clips of the stream recording (0: every clip).")
    ap.add_argument("--data-name", default="",
                    help="How the results name --calib-data/--eval-data (default: the directory's name; no paths).")
    ap.add_argument("--no-reference-size", action="store_true")
    ap.add_argument("--targets", default="both",
                    help="Recipes to re-measure: tensorrt, cpu or both; with tensorrt alone nothing is timed, and "
                         "--merge keeps the cpu rows and timings already in <out>.json.")
    ap.add_argument("--render", action="store_true", help="Only rewrite <out>.md from <out>.json.")
    ap.add_argument("--merge", action="store_true",
                    help="Keep the other part's results already in <out>.json (run models and reference size apart).")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(Path(f"{args.out}.json").read_text())
        for row in data["models"]:
            row["targets"] = check_targets(row)
        Path(f"{args.out}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        Path(f"{args.out}.md").write_text(markdown(data["models"], data["reference_size"], data["env"],
                                                   data.get("argv", []), _profile(args.out)))
        return 0
    import onnxruntime

    from kwsdeploy.cli.demo import shipped_demo_models

    names = [m for m in args.models.split(",") if m] or shipped_demo_models()
    if args.models == "none":
        names = []
    env = {"cpu": platform.processor() or platform.machine(), "cores": len(__import__("os").sched_getaffinity(0)),
           "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
           "calib_clips": args.calib_clips, "method": args.calib_method,
           "calib_data": _data_name(args.calib_data, args.data_name, "demo corpus") + " [train]",
           "eval_data": _data_name(args.eval_data, args.data_name, "demo corpus") + f" [{args.eval_split}]",
           "eval_stream_clips": args.eval_stream_clips}
    try:
        env["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from kwsdeploy.calibration.passes import parse_targets

    targets = parse_targets(args.targets)
    timed = "cpu" in targets
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(Path(f"{args.out}.json").read_text()) if args.merge and Path(f"{args.out}.json").is_file() else {}
    before = {r["model"]: r for r in old.get("models", [])}
    if not timed and not args.merge:
        ap.error("--targets tensorrt needs --merge (the cpu rows and timings come from <out>.json)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"[int8] {name}: export --int8 --target {args.targets}", file=sys.stderr)
            row = export_one(name, Path(tmp) / name, args.calib_clips, args.calib_method, targets,
                             calib_data=args.calib_data, eval_data=args.eval_data, eval_split=args.eval_split,
                             eval_stream_clips=args.eval_stream_clips)
            files = {p: (row["bundle"] / r["file"]).read_bytes() for p, r in row["rows"].items()}
            if timed:
                print(f"[int8] {name}: timing", file=sys.stderr)
                row["seconds_per_step"] = time_side_by_side(files, args.round_seconds, args.rounds)
            row.pop("bundle")
            row = merge_row(row, before.get(name) if args.merge else None, timed)
            row["targets"] = check_targets(row)
            rows.append(row)
    if args.merge:  # keep the other models' rows; the ones measured now replace theirs
        fresh = {r["model"] for r in rows}
        rows = [r for r in old.get("models", []) if r["model"] not in fresh] + rows
        rows.sort(key=lambda r: r["model"])
    for row in rows:
        row["targets"] = check_targets(row)
    ref = None if args.no_reference_size else reference_size(args.calib_clips or 64, args.calib_method or "minmax",
                                                              args.round_seconds, args.rounds)
    if ref is None:
        ref = old.get("reference_size")
    shown = shown_argv(argv if argv is not None else sys.argv[1:])
    Path(f"{args.out}.json").write_text(json.dumps({"env": env, "models": rows, "reference_size": ref, "argv": shown}, indent=1,
                                                   default=str) + "\n")
    Path(f"{args.out}.md").write_text(markdown(rows, ref, env, shown, _profile(args.out)))
    print(Path(f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
