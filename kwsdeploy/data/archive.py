"""Safe extraction of a .tar(.gz/.bz2/.xz) archive into a fresh directory, atomically.

The archive is read to its end first, so a compressed stream's checksum (the gzip CRC) is checked
before anything is written: a truncated or corrupt archive is one line naming the reason. Every
member is checked before extraction: absolute paths, '..' components, links pointing outside the
tree or through another link, and device or FIFO members are refused. Modes are cleaned (no
setuid/setgid/sticky, no group/other write) and owners are not restored, with or without
`tarfile`'s extraction filters (Python 3.10-3.11.3 lack them), so every supported Python
extracts the same way.
"""

from __future__ import annotations

import copy
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

from kwsdeploy.atomic import remove_path, temp_dir

_CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """The archive is unreadable, corrupt, truncated, or has a member that would escape the tree."""


def _escapes(name: str) -> bool:
    """True when a member or link name is absolute or climbs out with '..'."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    norm = posixpath.normpath(name.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def _prefixes(name: str) -> list[str]:
    parts = posixpath.normpath(name).split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def check_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Return the members if all are safe, else raise UnsafeArchiveError naming the first bad one."""
    members = tar.getmembers()
    links = {posixpath.normpath(m.name) for m in members if m.issym() or m.islnk()}
    for m in members:
        why = None
        if _escapes(m.name):
            why = "absolute path or '..' in its name"
        elif any(p in links for p in _prefixes(m.name)):
            why = "its path goes through a link of the archive"
        elif m.issym():
            target = posixpath.join(posixpath.dirname(m.name), m.linkname)
            if m.linkname.startswith("/") or _escapes(target):
                why = f"symbolic link to '{m.linkname}' outside the tree"
            elif any(p in links for p in _prefixes(target) + [posixpath.normpath(target)]):
                why = f"symbolic link to '{m.linkname}', another link"
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


def _clean(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of `m` with a plain mode and no owner to restore (what the 'data' filter does)."""
    m = copy.copy(m)
    if m.isdir():
        m.mode = 0o755
    elif m.isfile() or m.islnk():
        m.mode = 0o755 if m.mode & 0o100 else 0o644
    m.uid, m.gid, m.uname, m.gname = getattr(os, "getuid", int)(), getattr(os, "getgid", int)(), "", ""
    return m


def _corrupt(archive: Path, exc: BaseException) -> UnsafeArchiveError:
    if isinstance(exc, EOFError):
        why = f"truncated: the compressed stream ends early ({exc})"
    elif isinstance(exc, tarfile.ReadError) and "unexpected end" in str(exc).lower():
        why = f"truncated ({exc})"
    else:
        why = f"corrupt: {exc}" if str(exc) else f"corrupt ({type(exc).__name__})"
    return UnsafeArchiveError(f"{archive} is {why}: delete it and download it again (nothing was extracted).")


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


def verify_readable(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Read every header and then the compressed stream to its end (its checksum checked): the members."""
    try:
        members = check_members(tar, archive)
        while tar.fileobj.read(_CHUNK):  # past the tar end marker to the gzip/bz2/xz trailer and its CRC
            pass
    except UnsafeArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupt(archive, exc) from None
    return members


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest` (which must not exist yet) via a temp dir and a rename."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists: remove it or pass it as the extracted tree.")
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} not found: check the path given with --archive.")
    try:
        tar = tarfile.open(archive)
    except _READ_ERRORS as exc:
        raise UnsafeArchiveError(
            f"{archive} is not a readable tar archive ({exc or type(exc).__name__}): delete it and download it again."
        ) from None
    with tar:
        members = verify_readable(tar, archive)
        tmp = temp_dir(dest)
        try:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            try:
                tar.extractall(tmp, members=[_clean(m) for m in members], **kwargs)
            except _READ_ERRORS as exc:
                if isinstance(exc, OSError) and not isinstance(exc, (EOFError, tarfile.TarError)) and exc.errno:
                    raise  # a full or read-only disk: the error boundary names it
                raise _corrupt(archive, exc) from None
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                remove_path(tmp)
    return dest
