"""`kwsdeploy tune`: choose a bundle's detection threshold, smoothing and softmax temperature for a false-alarm budget
and write them (with the refractory period and gap) into its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli.common import user_errors


def register(app: typer.Typer) -> None:
    """Add `tune` to the CLI."""

    @app.command("tune")
    def tune_cmd(
        bundle: Path = typer.Option(..., "--bundle", help="Exported bundle directory (its manifest is rewritten)."),
        target: float = typer.Option(..., "--target-fa-per-hour", help="False alarms per hour the detector may make."),
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared directory (default: the demo corpus)."),
        split: str = typer.Option("valid", "--split", help="Split whose keywords tune the threshold (not the test speaker)."),
        speech_set: str = typer.Option("tune", "--speech-set", help="Held-out TTS half: tune (default) | test."),
        speech_minutes: float = typer.Option(16.0, "--speech-minutes", help="Minutes of non-keyword speech."),
        recording: str = typer.Option(
            "keywords", "--recording",
            help="Recording(s) of the split to tune on: keywords (its keywords between held-out speech and noise; "
                 "default), or keywords,digits (then its digits said with 0.5 s pauses too, streamed as one)."),
        refractory: Optional[float] = typer.Option(None, "--refractory", help="Per-keyword refractory, seconds."),
        min_gap: Optional[float] = typer.Option(None, "--min-gap", help="Gap after any event, seconds."),
        checkpoint: Optional[Path] = typer.Option(
            None, "--checkpoint", help="Also write the settings into this checkpoint's card (the one the bundle was "
                                       "exported from): `stream --checkpoint/--model` and later exports use them."),
        per_keyword: bool = typer.Option(True, "--per-keyword/--one-threshold",
                                         help="A threshold per keyword (default), or one for all keywords."),
        holdout: bool = typer.Option(True, "--holdout/--no-holdout",
                                     help="Keep per-keyword thresholds only if they beat one threshold on held-out "
                                          "halves of the tune recording, raised as far as held-out false alarms ask "
                                          "(default), or skip that check."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Tune threshold, smoothing and softmax temperature on the split's keywords between held-out speech;
        write the manifest."""
        from kwsdeploy.cli._detection import recording_logits
        from kwsdeploy.sources import BundleSource, resolve_settings
        from kwsdeploy.runtime.tuning import write_detection
        from kwsdeploy.streaming.det_report import tune_settings

        with user_errors():
            if not target >= 0:
                raise ValueError(f"--target-fa-per-hour must be >= 0, got {target}.")
            from kwsdeploy.data.detection_sets import recording_names

            if recording_names(recording)[0] != "keywords":
                raise ValueError(f"--recording {recording!r}: start with keywords (keywords or keywords,digits): its "
                                 "held-out speech is what the false-alarm budget is measured on.")
            src = BundleSource(bundle)
            base = resolve_settings(src, None, None, refractory, min_gap)
            logits, parts, info, seconds = recording_logits(src, recording, data, split, speech_set,
                                                            speech_minutes, seed)
            settings, tuned = tune_settings(logits, src.labels, src.hop_seconds, parts, seconds, target, base,
                                            per_keyword=per_keyword, holdout=holdout)
            import dataclasses

            settings = dataclasses.replace(settings, tuned={**tuned, "recording": info})
            if checkpoint is not None:
                from kwsdeploy.train.checkpoint import read_card

                card = read_card(checkpoint)
                if card.get("weights_sha256") != src.runner.manifest.checkpoint.get("weights_sha256"):
                    raise ValueError(f"--checkpoint {checkpoint} holds other weights than the bundle was exported "
                                     "from; pass the checkpoint the bundle was made of.")
            write_detection(bundle, settings)
            if checkpoint is not None:
                from kwsdeploy.runtime.tuning import write_card_detection

                write_card_detection(checkpoint, settings)
        if as_json:
            typer.echo(json.dumps(settings.to_dict(), indent=1))
            return
        typer.echo(f"{bundle}: threshold {settings.threshold_text()}, smoothing {settings.smoothing_seconds:g} s, "
                   f"softmax temperature {settings.temperature:g}, "
                   f"refractory {settings.refractory_seconds:g} s per keyword, gap {settings.min_gap_seconds:g} s; "
                   f"on {info['seconds'] / 60:.1f} min ({split} {info['recording']} recording, {speech_set} speech): "
                   f"{tuned['non_keyword_false_alarms_per_hour']:.2f} FA/h on non-keyword audio "
                   f"({tuned['false_alarms_per_hour']:.2f} with substitutions next to keywords), false reject rate {tuned['false_reject_rate']:.1%}")
        guard = tuned.get("holdout") or {}
        if "chosen" in guard:
            typer.echo(f"hold-out check (two halves of the recording): kept "
                       f"{'a threshold per keyword' if guard['chosen']['thresholds'] == 'per_keyword' else 'one threshold'}, "
                       f"raised {guard['chosen']['margin_steps']} grid step(s) for margin")
        if tuned["false_reject_rate"] >= 1.0:
            typer.echo("warning: at this budget the detector hears none of the keywords: the model needs more "
                       "training (non-keyword speech, more speakers) before it can be deployed at this budget.", err=True)
