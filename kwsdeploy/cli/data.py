"""`kwsdeploy data ...`: prepare-gsc (Speech Commands, or any GSC-layout tree) and prepare-fsdd."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from kwsdeploy.cli._options import float_list
from kwsdeploy.cli.common import user_errors

data_app = typer.Typer(help="Prepare datasets: GSC splits, FSDD as a GSC-layout tree.", no_args_is_help=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("kwsdeploy.data").setLevel(logging.INFO if verbose else logging.WARNING)


def _summary(out: Path) -> None:
    import json

    stats = json.loads((out / "stats.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    typer.echo(f"prepared {out} ({len(labels)} classes)")
    for split, s in stats.items():
        share = f", _unknown_ {s['unknown_share']:.1%}" if "unknown_share" in s else ""
        typer.echo(f"  {split:5s} {s['total']:6d} clips, {s['speakers']} speakers{share}")


class _LazyBar:
    """A download progress bar that appears only once bytes start to arrive."""

    def __init__(self, description: str) -> None:
        self.description, self._bar = description, None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            from kwsdeploy.data.download import rich_progress

            self._bar = rich_progress(self.description)
        self._bar[0](done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar[1]()


@data_app.command("prepare-gsc")
def prepare_gsc_cmd(
    data_root: Path = typer.Option(Path("data"), "--data-root", "--data_root", help="Where the GSC tree/archive is (or goes) and where the prepared folder is written."),
    data_version: int = typer.Option(2, "--data-version", "--data_version", min=1, max=2, help="GSC version: 1 (30 words) or 2 (35 words)."),
    class_split: str = typer.Option("all", "--class-split", "--class_split", help="'all' (every word a class) or 'sub' (10 commands + _unknown_ + _silence_)."),
    rebalance: bool = typer.Option(False, "--rebalance", help="Oversample training classes up to the largest one."),
    keywords: Optional[str] = typer.Option(None, "--keywords", help="Comma-separated keywords: like 'sub' for any word list (adds _unknown_ and _silence_)."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="A local speech_commands_v0.0N.tar.gz to extract instead of downloading."),
    source: Optional[Path] = typer.Option(None, "--source", help="An already extracted GSC-layout tree (default: looked up under --data-root)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Prepared folder (default: <data-root>/<corpus>_<split>)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed for the unknown/silence draws and rebalancing."),
    extra_train: Optional[list[Path]] = typer.Option(None, "--extra-train", help="Another GSC-layout tree whose every clip trains (e.g. from 'kwsdeploy data synth'); repeatable."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="A folder of your own recordings without keywords (any rate/length): cut into 1 s _unknown_ training clips."),
    unknown_share: float = typer.Option(0.1, "--unknown-share", min=0.0, max=1.0, help="_unknown_ clips drawn from the non-keyword words, as a share of the speech clips of each split."),
    no_download: bool = typer.Option(False, "--no-download", help="Never download; fail if no tree or archive is found."),
    log: bool = typer.Option(False, "--log", help="Log each step (the reference's --log)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a prepared folder already at the output path."),
) -> None:
    """Prepare train/valid/test jsonl, labels.json and stats.json from Speech Commands (or a GSC-layout tree)."""
    _setup_logging(log)
    from kwsdeploy.data.gsc import prepare_gsc

    kw = keywords.split(",") if keywords is not None else None
    if kw is not None and class_split == "sub":
        class_split = "all"  # --keywords replaces the 10 commands of 'sub'
    with user_errors():
        if class_split not in ("all", "sub"):
            raise ValueError(f"--class-split must be 'all' or 'sub', got '{class_split}'.")
        bar = _LazyBar("speech commands") if not no_download else None
        try:
            path = prepare_gsc(data_root, data_version, class_split, rebalance, kw, archive, source, out, seed,
                               allow_download=not no_download, progress=bar, overwrite=overwrite,
                               extra_train=extra_train or None, negatives=negatives, unknown_share=unknown_share)
        finally:
            if bar is not None:
                bar.close()
        _summary(path)


@data_app.command("prepare-fsdd")
def prepare_fsdd_cmd(
    fsdd_root: Path = typer.Option(..., "--fsdd-root", "--fsdd_root", help="The Free Spoken Digit Dataset folder (with recordings/)."),
    out: Path = typer.Option(Path("data/fsdd_gsc"), "--out", help="Where to write the GSC-layout tree."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic background noise."),
    extra_speakers: str = typer.Option(
        "refuse", "--extra-speakers",
        help="Speakers beyond george, jackson, nicolas, theo, yweweler (the full FSDD adds lucas): "
             "refuse (default), train (add them to the training split) or skip."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a tree that prepare-fsdd wrote at --out."),
    log: bool = typer.Option(False, "--log", help="Log each step."),
) -> None:
    """FSDD (8 kHz digits) -> a GSC-layout tree: 16 kHz 1 s clips zero..nine, lists by speaker, synthetic noise."""
    _setup_logging(log)
    from kwsdeploy.data.fsdd import TEST_SPEAKERS, VALID_SPEAKERS, prepare_fsdd

    with user_errors():
        path = prepare_fsdd(fsdd_root, out, seed=seed, overwrite=overwrite, extra_speakers=extra_speakers)
    corpus = json.loads((path / "kwsdeploy_corpus.json").read_text(encoding="utf-8"))
    typer.echo(f"training speakers: {', '.join(corpus['speakers']['train'])}")
    for speaker, n in corpus.get("skipped_speakers", {}).items():
        typer.echo(f"skipped (--extra-speakers skip): {n} clips of {speaker}")
    typer.echo(f"wrote {path} (validation: {', '.join(VALID_SPEAKERS)}; test: {', '.join(TEST_SPEAKERS)}; "
               "_background_noise_ is synthetic)")
    typer.echo(f"next: kwsdeploy data prepare-gsc --data-root {path} --keywords zero,one,two,three,four,five,six,seven,eight,nine")


def _count_bar(description: str):
    """A (callback(done, total), close) pair drawing a rich bar that counts items."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(description, total=None)
    bar.start()
    return (lambda done, total: bar.update(task, completed=done, total=total)), bar.stop


@data_app.command("synth")
def synth_cmd(
    words: Optional[str] = typer.Option(None, "--words", help="Comma-separated words to say, e.g. zero,one,...,nine."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the GSC-layout tree (training only)."),
    voices: str = typer.Option("train", "--voices", help="'train' (every installed training voice) or a comma list: en-us+f3,flite:slt,festival:kal_diphone."),
    per_voice: int = typer.Option(1, "--per-voice", min=1, max=10_000, help="Clips of each word per voice (each its own speed, pitch, level)."),
    unknown_per_voice: int = typer.Option(2, "--unknown-per-voice", min=0, max=10_000, help="_unknown_ clips per voice (hard negatives, sentence cuts)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the speed/pitch/level draws."),
    speed: Optional[str] = typer.Option(None, "--speed", help="'LO,HI': each clip's speaking-rate factor is drawn from U(LO, HI) (default: synth.SPEED_RANGE, 0.8-1.25)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a tree that kwsdeploy wrote at --out."),
    accents: str = typer.Option("off", "--accents", help="off | add: espeak-ng voices also say each word's accent variants (synth.ACCENT_VARIANTS: other vowels, as phonemes) | only: just those."),
    list_voices: bool = typer.Option(False, "--list-voices", help="Print the installed voices and their split (JSON) and exit."),
    log: bool = typer.Option(False, "--log", help="Log each step."),
) -> None:
    """SYNTHETIC speakers (espeak-ng, flite, festival) saying --words, as a GSC-layout tree for training only."""
    _setup_logging(log)
    from kwsdeploy.data import synth

    if list_voices:
        typer.echo(synth.voices_json())
        return
    with user_errors():
        if not words or out is None:
            raise ValueError("give --words (e.g. zero,one,two) and --out DIR, or --list-voices.")
        speed_range = synth.SPEED_RANGE if speed is None else tuple(float_list(speed))
        if len(speed_range) != 2:
            raise ValueError(f"--speed must be LO,HI (two numbers, e.g. 0.55,1.3), got {speed!r}.")
        update, close = _count_bar("synthetic speech")
        try:
            path = synth.synth_tree(words.split(","), out, voices, per_voice, unknown_per_voice, seed, progress=update,
                                     overwrite=overwrite, speed_range=speed_range, accents=accents)
        finally:
            close()
    meta = json.loads((path / "kwsdeploy_corpus.json").read_text())
    typer.echo(f"wrote {path}: {sum(meta['clips'].values())} SYNTHETIC clips from {len(meta['voices'])} voices "
               "(training only)")


def register(app: typer.Typer) -> None:
    """Add the `data` command group."""
    app.add_typer(data_app, name="data")
