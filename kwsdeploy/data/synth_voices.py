"""The synthetic voices of `kwsdeploy.data.synth` (espeak-ng, flite, festival): which are installed, how a
voice is named, and the fixed train / held-out split (see `kwsdeploy.data.synth`'s docstring)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ENGINES = ("espeak-ng", "flite", "festival")
ESPEAK_BASES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029",
                "en-gb-x-gbcwmd", "en-us-nyc")
HELD_OUT_ESPEAK_BASES = ("en-gb-x-gbcwmd", "en-us-nyc")
HELD_OUT_ESPEAK_VARIANTS = ("Andrea", "Annie", "belinda", "boris", "Denis", "edward2", "f4", "Gene2", "grandma",
                            "iven3", "klatt4", "linda", "m4", "Marco", "michel", "quincy", "robosoft4", "steph2",
                            "travis", "victor")
FLITE_VOICES = ("kal", "kal16", "awb", "slt", "rms")  # awb_time is limited-domain (it only says times)
HELD_OUT_FLITE = ("rms",)
FESTIVAL_VOICES = ("kal_diphone",)
HELD_OUT_FESTIVAL: tuple[str, ...] = ()


class SynthError(ValueError):
    """An unknown or unavailable voice, or a text-to-speech engine that failed or is missing."""


@dataclass(frozen=True, order=True)
class Voice:
    """A synthetic voice: engine and the engine's voice name (espeak-ng: `base` or `base+variant`)."""

    engine: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def speaker(self) -> str:
        """A file-name-safe speaker id for GSC-layout trees (no '_')."""
        short = {"espeak-ng": "esp", "flite": "flite", "festival": "fest"}[self.engine]
        return "syn-" + short + "-" + re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-")

    def __str__(self) -> str:
        return self.id


def _engine_binary(engine: str) -> str:
    return {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]


def _require_engine(engine: str) -> str:
    binary = _engine_binary(engine)
    path = shutil.which(binary)
    if path is None:
        pkg = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}[engine]
        raise SynthError(f"{binary} is not installed: install it (Debian: apt-get install {pkg}) to use {engine} voices.")
    return path


@functools.lru_cache(maxsize=None)
def espeak_variants() -> tuple[str, ...]:
    """The installed espeak-ng voice variants (names usable after '+'), sorted; () without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return ()
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=False).stdout
    lines = out.splitlines()
    if not lines or "File" not in lines[0]:
        return ()
    col = lines[0].index("File")
    names = set()
    for line in lines[1:]:
        field = line[col:].split("  ")[0].strip()
        if field.startswith("!v/"):
            name = field[3:]
            if re.fullmatch(r"[A-Za-z0-9_-]+", name):
                names.add(name)
    return tuple(sorted(names, key=str.lower))


@functools.lru_cache(maxsize=None)
def _flite_installed() -> tuple[str, ...]:
    if shutil.which("flite") is None:
        return ()
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    listed = out.split(":", 1)[-1].split()
    return tuple(v for v in FLITE_VOICES if v in listed)


@functools.lru_cache(maxsize=None)
def _festival_installed() -> tuple[str, ...]:
    if shutil.which("text2wave") is None:
        return ()
    roots = [Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")]
    found = {d.name for r in roots if r.is_dir() for d in r.glob("*/*") if d.is_dir()}
    return tuple(v for v in FESTIVAL_VOICES if v in found)


def parse_voice(spec: str) -> Voice:
    """'espeak-ng:en-us+f3' / 'en-us+f3' / 'flite:slt' / 'festival:kal_diphone' -> Voice (checked installed)."""
    text = spec.strip()
    engine, _, name = text.partition(":") if ":" in text else ("espeak-ng", "", text)
    engine = {"espeak": "espeak-ng", "espeakng": "espeak-ng", "text2wave": "festival"}.get(engine, engine)
    hint = "run 'kwsdeploy data synth --list-voices' for the installed ones."
    if engine not in ENGINES:
        raise SynthError(f"unknown voice '{spec}': the engine must be one of {', '.join(ENGINES)}; {hint}")
    _require_engine(engine)
    if engine == "espeak-ng":
        base, _, variant = name.partition("+")
        if base not in ESPEAK_BASES or (variant and variant not in espeak_variants()):
            raise SynthError(f"unknown voice '{spec}': espeak-ng voices are <base>[+<variant>] with base one of "
                             f"{', '.join(ESPEAK_BASES)} and an installed variant; {hint}")
    elif engine == "flite" and name not in _flite_installed():
        raise SynthError(f"unknown voice '{spec}': flite voices here are {', '.join(_flite_installed())}; {hint}")
    elif engine == "festival" and name not in _festival_installed():
        raise SynthError(f"unknown voice '{spec}': festival voices here are "
                         f"{', '.join(_festival_installed()) or 'none'}; {hint}")
    return Voice(engine, name)


def voice_split(voice: Voice) -> str:
    """'train' or 'held_out', by the fixed rule of the module docstring."""
    if voice.engine == "espeak-ng":
        base, _, variant = voice.name.partition("+")
        held = base in HELD_OUT_ESPEAK_BASES or variant in HELD_OUT_ESPEAK_VARIANTS
    elif voice.engine == "flite":
        held = voice.name in HELD_OUT_FLITE
    else:
        held = voice.name in HELD_OUT_FESTIVAL
    return "held_out" if held else "train"


def installed_voices() -> list[Voice]:
    """Every usable voice on this machine (engines that are missing contribute none), sorted."""
    voices = []
    if shutil.which("espeak-ng"):
        for base in ESPEAK_BASES:
            voices.append(Voice("espeak-ng", base))
            voices.extend(Voice("espeak-ng", f"{base}+{v}") for v in espeak_variants())
    voices += [Voice("flite", v) for v in _flite_installed()]
    voices += [Voice("festival", v) for v in _festival_installed()]
    return sorted(voices)


def train_voices() -> list[Voice]:
    """Installed voices that training may use."""
    return [v for v in installed_voices() if voice_split(v) == "train"]


def held_out_voices() -> list[Voice]:
    """Installed voices that no training step uses (for unseen test speech)."""
    return [v for v in installed_voices() if voice_split(v) == "held_out"]


def resolve_voices(spec: "str | Sequence[str] | None") -> list[Voice]:
    """`None` / 'train': every installed training voice; else a comma list (or sequence) of voice names.

    A held-out voice is refused (it must stay unseen); an unknown one too."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "train"):
        voices = train_voices()
        if not voices:
            raise SynthError("no text-to-speech engine is installed: install espeak-ng, flite or festival "
                             "(Debian: apt-get install espeak-ng flite festival).")
        return voices
    names = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise SynthError("--voices is empty: give 'train' or a comma-separated list such as en-us+f3,flite:slt.")
    voices = []
    for name in names:
        v = parse_voice(name)
        if voice_split(v) != "train":
            raise SynthError(f"voice '{v.id}' is held out (kwsdeploy.data.synth): it makes unseen test speech and "
                             "never trains; choose a training voice.")
        if v not in voices:
            voices.append(v)
    return voices


def _voice_key(v: Voice) -> int:
    """A stable integer per voice (seeds must not depend on which other voices are installed)."""
    import zlib

    return zlib.crc32(v.id.encode())


def voices_json() -> str:
    """The installed voices and their split, as JSON text (for `--list-voices`)."""
    return json.dumps([{"voice": v.id, "split": voice_split(v)} for v in installed_voices()], indent=1)
