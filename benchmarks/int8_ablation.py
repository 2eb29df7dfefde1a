"""INT8 ablations of the tensorrt recipe on the shipped demo checkpoints, measured on held-out data the
way `bench_int8.py` measures them (top-1 of the unseen speaker's clips through the ONNX Runtime step
runner, stream detection on the `eval-stream` recording), one variant per row.

    python benchmarks/int8_ablation.py --study gate [--models a,b] [--out benchmarks/results/int8_gate]
        [--calib-data PREPARED_DIR] [--eval-data PREPARED_DIR --eval-split valid --eval-stream-clips 0]

Studies: `gate` (the free-running stream-SQNR gate off, and at several floors: one greedy run at the
highest floor, each lower floor is a prefix of its rounds, exactly what the recipe does at that floor;
"(default)" marks what the defaults pick: off when the graph streams over INT8_STREAM_GATE_BELOW_DB);
`state` (Keyword Mamba: the SSM state float vs int8, `--quantize-state`); `drift` (per-layer SQNR over a
long free-running train stream with noise gaps, by quarter); `calib` (calibration method, percentile, clip
count and layers kept float, one `--variants` entry each: `METHOD[@PERCENTILE]/CLIPS[/KEEP,KEEP]`, e.g.
`minmax/64 percentile@99.99/256/first:2,last minmax/64/first/no-rr`; with `--cpu` also the cpu recipe's
candidates, untimed; `--cpu-only` those alone; a 4th part: the static cpu candidate's ablations).
Choose on the validation speaker (`--eval-split valid`), report on the test speaker.
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from int8_ablation_tables import calib_markdown, drift_markdown, markdown  # same folder: the studies' tables

GATE_FLOORS = (20.0, 25.0, 30.0, 35.0, 40.0)



@dataclass
class Setup:
    """One model's fp32 step graph, its calibration set, the held-out data and how to score a graph."""

    name: str
    params: int
    proto: object
    calib: object
    data: object
    manifest: object
    input_kind: str
    method: str
    reference: object = None  # fp32 logits on the held-out clips (agreement, logits SQNR)

    def score(self, model: bytes) -> dict:
        """Top-1, macro F1, agreement with fp32 and logits SQNR vs fp32 on the held-out clips (each streamed
        from the zero state, the last packet's logits), and stream detection when the data has a recording."""
        from kwsdeploy.calibration.report import clip_logits, stream_score
        from kwsdeploy.calibration.sqnr import sqnr_db
        from kwsdeploy.train.evaluate import classification_metrics

        m, d = self.manifest, self.data
        if self.reference is None:
            self.reference = clip_logits(self.proto.SerializeToString(), "step", self.input_kind, d.audio,
                                         m.feature_config)
        logits = clip_logits(model, "step", self.input_kind, d.audio, m.feature_config)
        pred = logits.argmax(1)
        met = classification_metrics(d.targets.tolist(), pred.tolist(), list(m.labels))
        row = {"top1": met["accuracy"], "macro_f1": met["macro_f1"], "clips": int(len(pred)),
               "agreement_with_fp32": float(np.mean(pred == self.reference.argmax(1))),
               "clip_logits_sqnr_db": round(sqnr_db(self.reference, logits), 2)}
        if d.recording is not None:
            row["stream"] = stream_score(model, self.input_kind, d, m.labels, m.stream, m.detection_settings)
        return row


def setup(name: str, clips: int, method: str, calib_data=None, eval_options=None) -> Setup:
    """Export the fp32 step graph of a shipped checkpoint and calibrate it as `export --int8` does;
    `eval_options`: Int8Options fields of the held-out data (eval_data, eval_split, eval_stream_clips)."""
    import onnx
    from rich.console import Console

    from kwsdeploy.calibration.passes import CalibrationSource, Int8Options, calibration_clips
    from kwsdeploy.cli._export_int8 import eval_data_for
    from kwsdeploy.exporters.bundle import build_bundle
    from kwsdeploy.exporters.inputs import load_export_model, parity_clips
    from kwsdeploy.models.registry import count_params

    m, labels, fc, info, accuracy, _ = load_export_model(name, None, False)
    manifest, blobs, _ = build_bundle(model=m, labels=labels, feature_config=fc, parity=parity_clips(fc),
                                      modes=("step",), frontend=False, precisions=("fp32",), hop_frames=None,
                                      checkpoint=info, accuracy=accuracy, exporter="legacy")
    f = next(x for x in manifest.files if x.precision == "fp32" and x.mode == "step")
    proto = onnx.load_from_string(blobs[f.path])
    opts = Int8Options(clips=clips, method=method, calib_data=calib_data, **(eval_options or {}))
    source = CalibrationSource(calibration_clips(opts, labels, fc), fc, method)
    calib = source.for_graph(proto, "step")
    data = eval_data_for(labels, opts, fc.sample_rate, Console(file=sys.stderr))
    return Setup(name, count_params(m), proto, calib, data, manifest, f.input_kind, method)


def _weight_only(s: Setup) -> bool:
    """Whether the recipe stores the float layers' weights int8 for this graph (as tensorrt_recipe decides)."""
    from kwsdeploy import tolerances
    from kwsdeploy.calibration.qdq import model_params

    return model_params(s.proto) > tolerances.INT8_WEIGHT_ONLY_MIN_PARAMS


def _weights_ratio(fp32, q) -> float:
    from kwsdeploy.calibration.report import model_weight_bytes

    return round(model_weight_bytes(q.SerializeToString()) / model_weight_bytes(fp32.SerializeToString()), 4)


def _row(s: Setup, variant: str, proto, extra: dict) -> dict:
    from kwsdeploy.calibration.sqnr import stream_sqnr

    t0 = time.perf_counter()
    row = {"model": s.name, "params": s.params, "variant": variant, **extra, **s.score(proto.SerializeToString())}
    if "stream_sqnr_db" not in row:
        row["stream_sqnr_db"] = round(stream_sqnr(s.proto, proto, s.calib), 2)
    row["weights_vs_fp32"] = _weights_ratio(s.proto, proto)
    row["eval_seconds"] = round(time.perf_counter() - t0, 1)
    st = row.get("stream", {}).get("accuracy")
    print(f"[ablation] {s.name} {variant}: top-1 {100 * row['top1']:.1f} agree {row['agreement_with_fp32']:.4f} "
          f"clip SQNR {row['clip_logits_sqnr_db']} stream {'-' if st is None else f'{100 * st:.1f}'} "
          f"SQNR {row['stream_sqnr_db']}", file=sys.stderr)
    return row


def gate_study(s: Setup, floors=GATE_FLOORS) -> list[dict]:
    """fp32, the gate off, and each floor (rounds of one greedy run at the highest floor)."""
    from kwsdeploy.calibration.qdq import quantize_tensorrt, quiet, tensorrt_recipe
    from kwsdeploy import tolerances

    top = max(floors)
    r = tensorrt_recipe(s.proto, s.calib, s.method, stream_floor_db=top, stream_trigger_db=top)
    history = r.settings.get("stream_sqnr_rounds_db", [])
    alone = r.settings.get("alone_stream_sqnr_db", {})
    gate = sorted((k for k, v in r.float_layers.items() if "stream floor" in v), key=lambda k: alone[k])
    base = {k: v for k, v in r.float_layers.items() if v.startswith("SQNR")}
    rows = [_row(s, "fp32", s.proto, {"floor_db": None, "gate_layers": 0, "stream_sqnr_db": None})]
    seen: dict[int, dict] = {}  # gate layers -> measured row (floors that stop at the same round share it)
    for label, floor in (("gate off", -math.inf), *((f"floor {f:g} dB", f) for f in floors)):
        k = next((i for i, h in enumerate(history) if h >= floor), len(history) - 1)
        k = min(k, len(gate))
        default = (floor == -math.inf) if history and history[0] >= tolerances.INT8_STREAM_GATE_BELOW_DB else (
            floor == tolerances.INT8_MIN_STREAM_SQNR_DB)
        name = label + (" (default)" if default else "")
        extra = {"floor_db": None if math.isinf(floor) else floor, "gate_layers": k,
                 "stream_sqnr_db": history[k] if history else None}
        if k in seen:
            rows.append({**seen[k], **extra, "variant": name})
            continue
        if k == len(gate):
            proto = r.proto
        else:
            with quiet():
                proto = quantize_tensorrt(s.proto, s.calib, s.method, exclude={**base, **{g: "" for g in gate[:k]}},
                                          weight_only=_weight_only(s)).proto
        rows.append(_row(s, name, proto, extra))
        seen[k] = rows[-1]
    return rows


def state_study(s: Setup) -> list[dict]:
    """fp32, the default tensorrt graph, and the same graph with its SSM state Q/DQ'd (--quantize-state)."""
    from kwsdeploy.calibration.qdq import tensorrt_recipe
    from kwsdeploy.calibration.state_q import quantize_state

    r = tensorrt_recipe(s.proto, s.calib, s.method)
    q, scales = quantize_state(r.proto, s.calib.ranges())
    return [_row(s, "fp32", s.proto, {"stream_sqnr_db": None}),
            _row(s, "tensorrt (state float)", r.proto, {}),
            _row(s, "tensorrt --quantize-state", q, {"state_scales": scales})]


CPU_ABLATIONS = {"per-tensor": ("per_channel", False), "no-rr": ("reduce_range", False)}


def parse_variant(text: str) -> dict:
    """`METHOD[@PERCENTILE]/CLIPS[/KEEP,KEEP[/per-tensor,no-rr]]` -> {method, percentile, clips, keep_float,
    cpu}; `cpu`: the static cpu candidate's ablations (per-tensor weight scales, 8-bit weights)."""
    from kwsdeploy.calibration.qdq import PERCENTILE

    parts = text.split("/")
    method, _, pct = parts[0].partition("@")
    keep = tuple(k for k in (parts[2] if len(parts) > 2 else "").split(",") if k)
    flags = [f for f in (parts[3] if len(parts) > 3 else "").split(",") if f]
    bad = [f for f in flags if f not in CPU_ABLATIONS]
    if bad:
        raise SystemExit(f"variant {text!r}: unknown cpu ablation(s) {bad}; known: {', '.join(CPU_ABLATIONS)}")
    return {"method": method, "percentile": float(pct) if pct else PERCENTILE, "clips": int(parts[1]),
            "keep_float": keep, "cpu": dict(CPU_ABLATIONS[f] for f in flags)}


def calib_for(s: Setup, clips: int, calib_data, cache: dict):
    """The calibration set of `clips` clips (the first `clips` of the same seeded order), cached."""
    from kwsdeploy.calibration.passes import CalibrationSource, Int8Options, calibration_clips

    if clips not in cache:
        fc = s.manifest.feature_config
        src = CalibrationSource(calibration_clips(Int8Options(clips=clips, calib_data=calib_data), s.manifest.labels, fc),
                                fc)
        cache[clips] = src.for_graph(s.proto, "step")
    return cache[clips]


def calib_study(s: Setup, variants: list[str], calib_data=None, cpu: bool = False, tensorrt: bool = True) -> list[dict]:
    """fp32, then per variant the tensorrt recipe (selective precision and stream gate as exported; not
    with `tensorrt` False) and, with `cpu`, the cpu recipe's static QOperator candidate on the same
    calibration (untimed), plus its dynamic candidate once."""
    from kwsdeploy.calibration.cpu import build_candidate
    from kwsdeploy.calibration.qdq import name_nodes, quiet, resolve_keep_float, tensorrt_recipe

    rows = [_row(s, "fp32", s.proto, {"recipe": "fp32", "stream_sqnr_db": None})]
    cache: dict = {}
    proto = name_nodes(s.proto)
    for text in variants:
        v = parse_variant(text)
        calib = calib_for(s, v["clips"], calib_data, cache)
        if tensorrt and not v["cpu"]:
            r = tensorrt_recipe(proto, calib, v["method"], percentile=v["percentile"], keep_float=v["keep_float"])
            extra = {**v, "calib_clips": v["clips"], "recipe": "tensorrt", "float_layers": len(r.float_layers),
                     "quantized": len(r.quantized), "gate_sqnr_db": r.settings.get("stream_logits_sqnr_db")}
            rows.append(_row(s, text, r.proto, extra))
        if cpu:
            keep = resolve_keep_float(proto, v["keep_float"], "cpu")
            names = ["static-qoperator-u8s8-rr"] + (["dynamic-u8s8-rr"] if text == variants[0] else [])
            for name in names:
                with quiet():
                    g = build_candidate(name, proto, calib, v["method"], v["percentile"], keep, **v["cpu"])
                rows.append(_row(s, text if name.startswith("static") else "(no calibration)", g,
                                 {**v, "calib_clips": v["clips"], "recipe": f"cpu: {name}",
                                  "float_layers": len(keep) if name.startswith("static") else "-"}))
    return rows


def long_train_stream(s: Setup, seed: int = 1) -> np.ndarray:
    """The calibration clips (train split) joined by noise gaps, as the eval-stream recording is built: [1, ..., T]."""
    from kwsdeploy.calibration.data import stream_inputs
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.data.noise import background_noise
    from kwsdeploy.streaming.stream_eval import build_long_recording

    audio = s.calib.clips.audio
    rec, _ = build_long_recording([(a, "") for a in audio], noise=background_noise(Path(demo_corpus_dir())), seed=seed)
    return stream_inputs(rec[None], s.calib.input_name, s.manifest.feature_config)


def drift_study(s: Setup, parts: int = 4) -> list[dict]:
    """Per quantized layer, the SQNR of its output over a long free-running train stream (gate off and
    default), per quarter of the stream; rows for the markdown's drift table."""
    from kwsdeploy.calibration.qdq import quantize_tensorrt, quiet, tensorrt_recipe
    from kwsdeploy.calibration.sqnr import stream_layer_sqnr

    x = long_train_stream(s)
    r = tensorrt_recipe(s.proto, s.calib, s.method)
    base = {k: v for k, v in r.float_layers.items() if v.startswith("SQNR")}
    with quiet():
        off = quantize_tensorrt(s.proto, s.calib, s.method, exclude=base, weight_only=_weight_only(s))
    rows = []
    for label, q in (("gate off", off), ("default", r)):
        per = stream_layer_sqnr(s.proto, q.proto, x, off.quantized, parts)
        isolated = r.settings.get("layer_sqnr_db", {})
        for k, v in per.items():
            rows.append({"model": s.name, "graph": label, "layer": k, "stream_sqnr_db": v,
                         "isolated_sqnr_db": isolated.get(k), "quantized": k in q.quantized})
        print(f"[ablation] {s.name} {label}: logits per quarter {per['logits']}", file=sys.stderr)
    return rows


def _about(args) -> str:
    """What the calib study measured on (data named, never by path)."""
    name = lambda p, d: d if p is None else (args.data_name or Path(p).name)  # noqa: E731
    stream = ("no stream recording (--no-stream)" if args.no_stream else
              f"stream: {args.eval_stream_clips or 'all'} of its clips joined by noise (`eval-stream` recording)")
    return (f"Held-out: {name(args.eval_data, 'demo corpus')} [{args.eval_split}], each clip streamed from the zero "
            f"state through the ONNX Runtime step runner (held-out logits SQNR: the last packet's logits of INT8 vs "
            f"fp32 over those clips); {stream}. Calibration: {name(args.calib_data, 'demo corpus')} [train], the "
            "variant's clip count (seed 0). Calib stream SQNR: logits of INT8 vs fp32, both free-running on the "
            f"calibration streams of --calib-clips {args.calib_clips}.")


STUDIES = {"gate": (gate_study, "INT8 tensorrt recipe: the stream-SQNR gate on held-out data"),
           "calib": (calib_study, "INT8: calibration method, percentile, clip count and layers kept float"),
           "state": (state_study, "INT8 tensorrt recipe: the cost of --quantize-state (int8 SSM state)"),
           "drift": (drift_study, "INT8 tensorrt recipe: per-layer SQNR over a long free-running stream")}
RENDER = {"drift": drift_markdown, "calib": calib_markdown}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=sorted(STUDIES), required=True)
    ap.add_argument("--models", default="", help="Comma list (default: every shipped demo checkpoint).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--calib-clips", type=int, default=64)
    ap.add_argument("--calib-method", default="minmax")
    ap.add_argument("--calib-data", type=Path, default=None, help="Calibration clips (default: the demo corpus').")
    ap.add_argument("--eval-data", type=Path, default=None, help="Held-out prepared dir (default: the demo corpus).")
    ap.add_argument("--eval-split", default="test", help="Choose on valid (the validation speaker), report on test.")
    ap.add_argument("--eval-stream-clips", type=int, default=40, help="Clips of the stream recording (0: all).")
    ap.add_argument("--data-name", default="", help="How the results name the data (default: the dir's name).")
    ap.add_argument("--variants", nargs="+", default=["minmax/64"], help="calib study: space-separated variants (see above).")
    ap.add_argument("--cpu", action="store_true", help="calib study: also the cpu recipe's candidates (untimed).")
    ap.add_argument("--cpu-only", action="store_true", help="calib study: the cpu recipe's candidates alone.")
    ap.add_argument("--no-stream", action="store_true", help="Clip metrics only (no stream recording: faster).")
    args = ap.parse_args(argv)
    from kwsdeploy.cli.demo import shipped_demo_models

    fn, title = STUDIES[args.study]
    if args.study == "calib":
        import functools

        variants = " ".join(args.variants).split()
        ablated = [v for v in variants if parse_variant(v)["cpu"]]
        if ablated and not (args.cpu or args.cpu_only):  # they ablate the cpu candidate: no row without it
            ap.error(f"variants {', '.join(ablated)} ablate the cpu recipe's static candidate: add --cpu or --cpu-only")
        fn = functools.partial(calib_study, variants=variants, calib_data=args.calib_data,
                               cpu=args.cpu or args.cpu_only, tensorrt=not args.cpu_only)
    ev = {"eval_data": args.eval_data, "eval_split": args.eval_split, "eval_stream_clips": args.eval_stream_clips}
    out = args.out or Path(f"benchmarks/results/int8_{args.study}")
    names = [m for m in args.models.split(",") if m] or shipped_demo_models()
    rows: list[dict] = []
    for name in names:
        print(f"[ablation] {name}: export and calibrate", file=sys.stderr)
        s = setup(name, args.calib_clips, args.calib_method, args.calib_data, ev)
        if args.no_stream:
            import dataclasses

            s.data = dataclasses.replace(s.data, recording=None, events=(), recording_source="")
        rows += fn(s)
        out.parent.mkdir(parents=True, exist_ok=True)
        from bench_int8 import shown_argv  # same folder: the results name no machine path

        shown = shown_argv(argv if argv is not None else sys.argv[1:])
        out.with_suffix(".json").write_text(json.dumps({"rows": rows, "argv": shown}, indent=1, default=str) + "\n")
        render = RENDER.get(args.study, markdown)
        about = _about(args) if args.study == "calib" else None
        out.with_suffix(".md").write_text(render(rows, title, shown, about) if about else render(rows, title, shown))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
