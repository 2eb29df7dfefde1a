"""`kwsdeploy export`: a checkpoint (or the shipped demo checkpoint) to a parity-checked ONNX bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

PARITY_CLIPS = 4


def parity_clips(feature_config, clips: int = PARITY_CLIPS):
    """Real clips for export-time parity: the demo corpus test split when present, else a
    deterministic synthetic signal (said so in the manifest)."""
    from kwsdeploy.exporters.bundle import ParityData
    from kwsdeploy.features import compute_features

    audio, source = None, ""
    try:
        from kwsdeploy.data.dataset import KwsDataset
        from kwsdeploy.data.demo import demo_corpus_dir

        ds = KwsDataset(demo_corpus_dir(), "test")
        picks = np.linspace(0, len(ds) - 1, clips).round().astype(int)
        audio = np.stack([np.asarray(ds[int(i)][0], dtype=np.float32) for i in picks])
        source = f"demo corpus test split, {clips} clips (indices {picks.tolist()})"
    except (ImportError, FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        t = np.arange(feature_config.clip_samples) / feature_config.sample_rate
        audio = np.stack([
            0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t * (1 + t)) * np.exp(-3 * (t - 0.5) ** 2)
            + 0.01 * rng.standard_normal(t.shape) for i in range(clips)
        ]).astype(np.float32)
        source = f"synthetic chirps, {clips} clips (no demo corpus found)"
    features = compute_features(audio, feature_config).numpy()
    return ParityData(features=features, audio=audio, source=source)


def _load_model(model: str, checkpoint: Optional[Path], random_init: bool):
    """(model, labels, feature_config, checkpoint info, accuracy, message) for the CLI's choices."""
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.models.registry import create, get_card, kws_info

    card = get_card(model)
    if random_init:
        if checkpoint is not None:
            raise ValueError("--random-init and --checkpoint exclude each other; pass one.")
        import torch

        torch.manual_seed(0)
        m = create(card.name).eval()
        labels = [f"class{i}" for i in range(kws_info(m).num_classes)]
        info = {"source": "random-init (seed 0)", "random_init": True}
        return m, labels, FeatureConfig.deployable(card.n_mfcc), info, {}, f"{card.name}: random weights (seed 0), for testing only"
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

    msg = ""
    if checkpoint is None:
        checkpoint = demo_checkpoint_path(card.name)
        msg = f"no --checkpoint given: using the shipped demo checkpoint of {card.name} ({checkpoint})"
    ck = load_checkpoint(checkpoint)
    if get_card(ck.card["model"]).name != card.name:
        raise ValueError(f"--model {card.name} but the checkpoint holds {ck.card['model']!r}; pass the matching --model.")
    info = {
        "source": "demo" if msg else str(Path(checkpoint).name),
        "weights_sha256": ck.card.get("weights_sha256", ""),
        "random_init": False,
    }
    accuracy = {"checkpoint_metrics": ck.card.get("metrics")} if ck.card.get("metrics") else {}
    return ck.model, ck.labels, ck.feature_config, info, accuracy, msg or f"checkpoint {checkpoint}"


def _card_detection(model: str, checkpoint: Optional[Path]):
    """The tuned detection settings the checkpoint's card carries (None: the defaults go into the manifest)."""
    from kwsdeploy.models.registry import get_card
    from kwsdeploy.runtime.tuning import card_detection
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, read_card

    return card_detection(read_card(checkpoint or demo_checkpoint_path(get_card(model).name)))


def _names(names: list[str]) -> str:
    """'audio + 9 state' rather than every state name (the manifest lists them all)."""
    main = [n for n in names if not n.startswith(("state.", "new_state."))]
    n_state = len(names) - len(main)
    return ", ".join(main) + (f" + {n_state} state" if n_state else "")


def print_summary(result, console) -> None:
    """The export summary table: one row per file."""
    from rich.table import Table

    table = Table(title=f"kwsdeploy export -> {result.path}")
    for col in ("file", "size", "opset", "inputs", "outputs", "nodes", "parity max|d| (atol)", "time"):
        table.add_column(col, justify="right" if col in ("size", "opset", "nodes", "time") else "left", no_wrap=True)
    for r in result.rows:
        table.add_row(
            r.file, f"{r.size_bytes / 1024:.0f} KiB", str(r.opset), _names(r.inputs), _names(r.outputs),
            str(r.nodes), f"{r.parity_max_abs:.1e} ({r.parity_atol:g})", f"{r.seconds:.1f} s",
        )
    console.print(table)
    m = result.manifest
    spec = f"packet {m.stream.packet_frames} frames, delay {m.stream.delay_frames}, {len(m.stream.states)} states; " if m.stream else ""
    console.print(f"{spec}parity on: {m.parity_data}; total {m.export_seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add `export` to the CLI."""
    from kwsdeploy.cli import _options as opt

    @app.command("export")
    def export_cmd(
        model: str = typer.Option(..., "--model", "-m", help="Registry name (see 'kwsdeploy models')."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint dir; default: the shipped demo checkpoint."),
        mode: str = typer.Option("step", "--mode", help="step, offline or both."),
        frontend: bool = typer.Option(False, "--frontend", help="Put the streaming MFCC (and its sample cache) inside the graph: input 'audio'."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write an fp16 graph (fp32 inputs/outputs)."),
        int8: bool = typer.Option(False, "--int8", help="Also write INT8 graphs calibrated on real speech, and report.md."),
        calib_data: Optional[Path] = typer.Option(
            None, "--calib-data", help="Calibration clips: a prepared dir (train split) or a folder of label-named "
                                       "subfolders; default: the embedded demo corpus' train split."),
        calib_clips: int = typer.Option(64, "--calib-clips", help="Clips joined into the calibration streams."),
        calib_method: str = typer.Option("minmax", "--calib-method", help="minmax, percentile or entropy."),
        target: str = typer.Option("both", "--target", help="INT8 recipe: tensorrt, cpu or both."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Bundle directory (default exports/<model>)."),
        hop_frames: Optional[int] = opt.PACKET_FRAMES,
        random_init: bool = typer.Option(False, "--random-init", help="Random weights instead of a checkpoint (testing)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle directory."),
        exporter: str = opt.exporter_option("auto"),
    ) -> None:
        """Export a model's step (and/or offline) graph to a bundle, checked against torch on real clips."""
        from kwsdeploy.cli.common import console, user_errors

        con = console()
        con.width = max(con.width, 140)
        with user_errors():
            int8_options = None
            if int8:
                from kwsdeploy.calibration.passes import Int8Options, parse_targets

                int8_options = Int8Options(parse_targets(target), calib_data, calib_clips, calib_method)
            modes = {"step": ("step",), "offline": ("offline",), "both": ("step", "offline")}.get(mode)
            if modes is None:
                raise ValueError(f"--mode must be step, offline or both, got {mode!r}.")
            from kwsdeploy.cli.common import UserError
            from kwsdeploy.exporters.bundle import ParityError, export_bundle
            from kwsdeploy.exporters.onnx import ExportError
            from kwsdeploy.models.registry import kws_info

            m, labels, fcfg, info, accuracy, msg = _load_model(model, checkpoint, random_init)
            detection = None if random_init else _card_detection(model, checkpoint)
            con.print(msg)
            out_dir = out or Path("exports") / kws_info(m).name
            inputs = [("--checkpoint", checkpoint), ("--calib-data", calib_data)]
            build = dict(model=m, labels=labels, feature_config=fcfg, parity=parity_clips(fcfg), modes=modes,
                         frontend=frontend, precisions=("fp32", "fp16") if fp16 else ("fp32",), hop_frames=hop_frames,
                         checkpoint=info, accuracy=accuracy, exporter=exporter, detection=detection)
            report = None
            try:
                if int8_options is not None:
                    from kwsdeploy.cli._export_int8 import export_int8

                    result, report = export_int8(out_dir, overwrite, inputs, int8_options, build, con)
                else:
                    result = export_bundle(out_dir, overwrite=overwrite, inputs=inputs, **build)
            except (ParityError, ExportError) as exc:
                raise UserError(str(exc)) from None
        print_summary(result, con)
        if report:
            from kwsdeploy.cli._export_int8 import print_report

            print_report(report, con)
        print_trt_check(result.path, con)


def print_trt_check(bundle_dir: Path, console) -> None:
    """The TensorRT parser check of every exported graph for the oldest target (a warning, not an error)."""
    from kwsdeploy.trt.compat import check_path
    from kwsdeploy.trt.versions import DEFAULT_CHECK

    for r in check_path(bundle_dir, [DEFAULT_CHECK]):
        if r.ok:
            console.print(f"TensorRT {r.version} parser check: {r.file} OK")
            continue
        console.print(f"[yellow]warning: TensorRT {r.version} would refuse {r.file}:[/yellow]", highlight=False)
        for f in r.findings:
            console.print(f"  {f.line()}", highlight=False, markup=False)
