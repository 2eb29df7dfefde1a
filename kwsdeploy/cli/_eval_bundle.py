"""`kwsdeploy eval --bundle DIR --precision P`: a bundle's graph of one precision on a prepared split or
a folder, through the ONNX Runtime step runner (each clip streamed from the zero state), as a device runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np


def evaluate_bundle(bundle: Path, precision: str, data: Optional[Path], split: str, folder: Optional[Path],
                    placement: str) -> dict[str, Any]:
    """Top-1, macro F1, per-class recall and confusion of one file; agreement with the fp32 file; for
    --data with a step graph, stream detection on the split's clips joined by noise."""
    from kwsdeploy.calibration.report import EvalData, evaluate_file, held_out_data
    from kwsdeploy.cli._export_int8 import detection_defaults
    from kwsdeploy.cli.common import UserError
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
        from kwsdeploy.cli.evaluate import folder_clips
        from kwsdeploy.placement import resolve_placement

        placement = resolve_placement(placement, dict(m.checkpoint))
        waves, targets, notes = folder_clips(folder, labels, m.feature_config, placement)
        ev = EvalData(np.stack(waves).astype(np.float32), np.array(targets), str(folder))
        source: dict[str, Any] = {"folder": str(folder), "placement": placement}
    else:
        from kwsdeploy.cli.stream import _noise

        ev = held_out_data(Path(data), labels, split, noise=_noise(Path(data)))
        source = {"data": str(data), "split": split}
    ref = None
    if precision != "fp32" and any(f.mode == mode and f.precision == "fp32" for f in m.files):
        fp32 = m.file(mode, "fp32")
        ref = evaluate_file(b.path / fp32.path, mode, fp32.input_kind, EvalData(ev.audio, ev.targets, ev.source),
                            labels, m.feature_config)["predictions"]
    row = evaluate_file(b.path / mf.path, mode, mf.input_kind, ev, labels, m.feature_config, m.stream,
                        detection_defaults(), np.array(ref) if ref is not None else None)
    metrics = classification_metrics(ev.targets.tolist(), row["predictions"], labels)
    metrics.update(model=m.model.get("name", "?"), checkpoint=str(b.path / mf.path), bundle=str(b.path),
                   precision=precision, file=mf.path, mode=mode, notes=notes, **source)
    if "agreement_with_fp32" in row:
        metrics["agreement_with_fp32"] = row["agreement_with_fp32"]
    if "stream" in row:
        metrics["stream"] = row["stream"]
    return metrics
