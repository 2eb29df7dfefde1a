"""What a manifest read from disk must satisfy (labels, plain file names, hashes, ranges), and the
errors a manifest or bundle raises. Torch-free; `kwsdeploy.manifest` re-exports all of it."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence


class ManifestError(ValueError):
    """A manifest (or bundle) that cannot be used; the message says what is wrong and what to do."""


class SchemaTooNewError(ManifestError):
    """The bundle was written by a newer kwsdeploy than the one reading it."""


class HashMismatchError(ManifestError):
    """A bundle file's bytes differ from the sha256 recorded at export."""


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_plain_name(name: Any) -> bool:
    """A file name with no directory part: nothing in a bundle may point outside it."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and ":" not in name)


def check_labels(labels: Sequence[Any], where: str) -> None:
    """Labels are non-empty, distinct strings; raise ManifestError naming the first problem."""
    if not labels:
        raise ManifestError(f"{where}: no labels.")
    for lab in labels:
        if not isinstance(lab, str) or not lab.strip():
            raise ManifestError(f"{where}: label {lab!r} is not a non-empty string.")
    seen = [lab for i, lab in enumerate(labels) if lab in labels[:i]]
    if seen:
        raise ManifestError(f"{where}: label {seen[0]!r} appears twice; labels must be distinct.")


def check_manifest(m: Any) -> None:
    """Ranges and names a `Manifest` read from disk must satisfy (see the error for what to do)."""
    where = "manifest"
    check_labels(list(m.labels), where)
    for name in [f.path for f in m.files] + list(m.hashes) + list(m.sizes):
        if not is_plain_name(name):
            raise ManifestError(f"{where}: file name {name!r} is not a plain file name inside the bundle; re-export it.")
    for name, digest in m.hashes.items():
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ManifestError(f"{where}: the sha256 of {name} is not 64 hex digits; re-export the bundle.")
    for f in m.files:
        if not (isinstance(f.parity_atol, (int, float)) and math.isfinite(f.parity_atol) and f.parity_atol >= 0):
            raise ManifestError(f"{where}: {f.path} has parity_atol {f.parity_atol!r}; re-export the bundle.")
    s = m.stream
    if s is not None:
        for name, low in (("packet_frames", 1), ("delay_frames", 0), ("window_frames", 1), ("n_mfcc", 1),
                          ("num_classes", 1)):
            v = getattr(s, name)
            if not isinstance(v, int) or v < low:
                raise ManifestError(f"{where}: stream.{name} = {v!r}, expected an integer >= {low}; re-export the bundle.")
        if s.num_classes != len(m.labels):
            raise ManifestError(f"{where}: stream.num_classes = {s.num_classes} but {len(m.labels)} labels; "
                                "re-export the bundle.")
