"""Safe extraction of a .tar(.gz) archive into a fresh directory, atomically.

Every member is checked before anything is written: absolute paths, '..' components, links
that point outside the tree, and device or FIFO members are refused with a one-line error.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from pathlib import Path


class UnsafeArchiveError(ValueError):
    """The archive has a member that would escape the extraction directory."""


def _escapes(name: str) -> bool:
    """True when a member or link name is absolute or climbs out with '..'."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    norm = posixpath.normpath(name.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def check_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Return the members if all are safe, else raise UnsafeArchiveError naming the first bad one."""
    members = tar.getmembers()
    for m in members:
        why = None
        if _escapes(m.name):
            why = "absolute path or '..' in its name"
        elif m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or _escapes(target):
                why = f"symbolic link to '{m.linkname}' outside the tree"
        elif m.islnk():
            if _escapes(m.linkname):
                why = f"hard link to '{m.linkname}' outside the tree"
        elif not (m.isfile() or m.isdir()):
            why = "device, FIFO or other special file"
        if why:
            raise UnsafeArchiveError(
                f"unsafe member '{m.name}' in {archive} ({why}): refusing to extract; "
                "use the official archive or extract it yourself after checking it."
            )
    return members


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest` (which must not exist yet) via a temp dir and a rename."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists: remove it or pass it as the extracted tree.")
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found: check the path given with --archive.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.extract-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        try:
            tar = tarfile.open(archive)
        except (tarfile.TarError, OSError) as exc:
            raise UnsafeArchiveError(
                f"{archive} is not a readable tar archive ({exc}): delete it and download it again."
            ) from None
        with tar:
            members = check_members(tar, archive)
            tmp.mkdir()
            try:
                tar.extractall(tmp, members=members, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise UnsafeArchiveError(f"extracting {archive} failed ({exc}): delete it and download it again.") from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
