"""Atomic, ownership-checked writes of output directories and files (stdlib only, torch-free).

An output directory is replaced only when it holds our own artifact of the same kind (its marker
file, see `ArtifactKind`) and the caller says `overwrite`; an output equal to, inside or around
one of the command's inputs is refused. A new tree is built in a hidden sibling
`.NAME.tmp-PID-XXXX` and swapped in with one exchange (Linux renameat2 RENAME_EXCHANGE), so the
final name always holds the old or the new tree; where the kernel or file system lacks the
exchange, two renames are used and a run killed between them leaves `.NAME.old-PID-XXXX`, which
the next writer of NAME puts back (`recover`). Leftovers of dead processes are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

log = logging.getLogger("kwsdeploy")


class OutputError(ValueError):
    """An output path cannot be written without destroying something that is not ours."""


@dataclass(frozen=True)
class ArtifactKind:
    """A kind of directory we write, recognised by a JSON marker file inside it."""

    name: str  # in messages: "bundle", "checkpoint", ...
    marker: str  # file name of the marker, e.g. "manifest.json"
    check: Callable[[Any], bool]  # is the parsed marker ours?

    def holds(self, path: Path) -> bool:
        """Whether `path` is a directory holding this kind of artifact (marker present and ours)."""
        marker = Path(path) / self.marker
        if not marker.is_file() or marker.is_symlink():
            return False
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        try:
            return bool(self.check(data))
        except Exception:
            return False


def _is_obj(d: Any, *keys: str) -> bool:
    return isinstance(d, dict) and all(k in d for k in keys)


BUNDLE = ArtifactKind("bundle", "manifest.json",
                      lambda d: _is_obj(d, "schema_version", "kwsdeploy_version", "files", "hashes"))
CHECKPOINT = ArtifactKind("checkpoint", "card.json", lambda d: _is_obj(d, "kind") and d["kind"] == "kwsdeploy-checkpoint")
PREPARED = ArtifactKind("prepared dataset", "prepared.json", lambda d: _is_obj(d, "format", "audio_root"))
CORPUS_TREE = ArtifactKind("corpus tree (prepare-fsdd)", "kwsdeploy_corpus.json",
                           lambda d: _is_obj(d, "name", "source"))

_LEFTOVER = r"^\.{name}\.(tmp|old)-(\d+)-"


# -- checks -------------------------------------------------------------------------------------
def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _related(a: Path, b: Path) -> Optional[str]:
    """How output `a` relates to input `b`: 'is', 'is inside', 'contains' or None."""
    ra, rb = _real(a), _real(b)
    if ra == rb:
        return "is"
    if rb in ra.parents:
        return "is inside"
    if ra in rb.parents:
        return "contains"
    return None


def check_not_input(out: Path, inputs: Iterable[tuple[str, Optional[Path]]], option: str = "--out",
                    allow_inside: bool = False) -> None:
    """Refuse an output equal to, inside (unless `allow_inside`) or containing one of the inputs
    (`(option, path)` pairs)."""
    for name, inp in inputs:
        if inp is None:
            continue
        how = _related(Path(out), Path(inp))
        if how and not (allow_inside and how == "is inside"):
            raise OutputError(f"{option} {out} {how} the input {name} {inp}: writing there could destroy the input; "
                              f"choose an {option} outside it.")


def check_output_dir(out: Path, kind: ArtifactKind, overwrite: bool,
                     inputs: Iterable[tuple[str, Optional[Path]]] = (), option: str = "--out",
                     overwrite_flag: str = "--overwrite", allow_inside: bool = False) -> None:
    """Raise OutputError unless `out` may become a `kind` directory (see the module docstring)."""
    out = Path(out)
    check_not_input(out, inputs, option, allow_inside)
    if out.is_symlink():
        raise OutputError(f"{option} {out} is a symbolic link: pass the real path (kwsdeploy does not replace links).")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{option} {out} exists and is a file, not a {kind.name}: choose another {option} "
                          "(kwsdeploy never replaces what it did not write).")
    if not any(out.iterdir()):
        return  # an empty directory holds nothing to lose
    if not kind.holds(out):
        raise OutputError(f"{option} {out} exists and is not a kwsdeploy {kind.name} (no {kind.marker} written by "
                          f"kwsdeploy): choose another {option} or remove it yourself.")
    if not overwrite:
        raise OutputError(f"{option} {out} already holds a {kind.name}: pass {overwrite_flag} to replace it, "
                          f"or choose another {option}.")


# -- leftovers ----------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """(path, 'tmp'|'old', pid) of the hidden siblings that writes of `out` leave behind."""
    out = Path(out)
    pattern = re.compile(_LEFTOVER.format(name=re.escape(out.name)))
    found = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.match(p.name)
        if m:
            found.append((p, m.group(1), int(m.group(2))))
    return sorted(found)


def recover(out: Path, kind: Optional[ArtifactKind] = None) -> list[str]:
    """Put back an old artifact that an interrupted replacement left aside; remove dead runs' leftovers.

    Returns one line per action (also logged as warnings).
    """
    out = Path(out)
    done = []
    for path, what, pid in leftovers(out):
        if _alive(pid):
            continue
        if what == "old" and not os.path.lexists(out) and (kind is None or kind.holds(path)):
            os.rename(path, out)
            done.append(f"restored {out} from {path.name}, left aside by an interrupted replacement")
        else:
            remove_path(path)
            done.append(f"removed {path.name}, left by an interrupted kwsdeploy run (pid {pid})")
    for line in done:
        log.warning(line)
    return done


def remove_path(path: Path) -> None:
    """Delete a file, link or directory tree (quietly: it is a leftover of ours)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# -- renames ------------------------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _between_renames() -> None:
    """Fault-injection point of the two-rename fallback (tests kill the process here)."""


def umask() -> int:
    """The process umask (read without changing it for longer than two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give every file and folder under `root` the modes a plain open()/mkdir() would have (libraries
    such as safetensors or tempfile create 0600/0700 files); executable bits are kept."""
    mask = umask()
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, (0o777 if mode & 0o100 else 0o666) & ~mask)


def temp_dir(out: Path, kind: Optional[ArtifactKind] = None) -> Path:
    """A fresh hidden sibling of `out` to build it in, with the user's umask applied (not 0700)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out, kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished directory `tmp` to `out`; the final name always holds the old or the new tree."""
    tmp, out = Path(tmp), Path(out)
    if not os.path.lexists(out):
        try:
            os.rename(tmp, out)
            return
        except OSError as exc:  # appeared meanwhile (ENOTEMPTY/EEXIST): replace it below
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not os.path.lexists(out):
                raise
    if _exchange(tmp, out):
        remove_path(tmp)  # now holds the old tree
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        _between_renames()
        os.rename(tmp, out)
    except BaseException:
        if not os.path.lexists(out):
            os.rename(old, out)
        raise
    remove_path(old)


@contextlib.contextmanager
def writing_dir(out: Path, kind: ArtifactKind, overwrite: bool = False,
                inputs: Iterable[tuple[str, Optional[Path]]] = (), option: str = "--out",
                allow_inside: bool = False) -> Iterator[Path]:
    """Check `out`, yield a temp dir to fill, then swap it in; on any error nothing changes at `out`."""
    out = Path(out)
    inputs = list(inputs)
    check = dict(overwrite=overwrite, inputs=inputs, option=option, allow_inside=allow_inside)
    check_output_dir(out, kind, **check)
    tmp = temp_dir(out, kind)
    try:
        yield tmp
        apply_umask(tmp)
        check_output_dir(out, kind, **check)  # it may have appeared meanwhile
        replace_dir(tmp, out)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def is_our_png(path: Path) -> bool:
    """Whether `path` is a PNG whose 'Software' text chunk says kwsdeploy (how our plots are marked)."""
    import struct

    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            for _ in range(64):  # text chunks come before the image data
                head = f.read(8)
                if len(head) < 8:
                    return False
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IDAT" or kind == b"IEND":
                    return False
                body = f.read(length)
                f.read(4)  # CRC
                if kind == b"tEXt" and body == b"Software\x00kwsdeploy":
                    return True
    except (OSError, struct.error):
        return False
    return False


@contextlib.contextmanager
def writing_file(path: Path, suffix: str = "", mode: Optional[int] = None) -> Iterator[Path]:
    """Yield a temp sibling of `path` for a writer that takes a path (soundfile, savefig, a memmap);
    then give it `mode` (default: the umask's) and rename it over `path`. On any error the temp is
    removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask() if mode is None else mode)  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(path: Path, data: bytes | str, overwrite: bool = True, option: str = "--out") -> Path:
    """Write a file via a temp sibling and one rename (umask applied); refuse a directory or, unless
    `overwrite`, an existing file."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory: give a file path.")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path} exists: pass --overwrite to replace it, or choose another path.")
    with writing_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    return path


# -- report files (JSON, CSV, Markdown) ----------------------------------------------------------
@dataclass(frozen=True)
class ReportKind:
    """A kind of report file we write, recognised by its content (a field or marker line we write)."""

    name: str  # in messages: "detection report", ...
    check: Callable[[str], bool]  # is this file's text ours?

    def holds(self, path: Path) -> bool:
        """Whether `path` is a plain file whose text this kind recognises as ours."""
        path = Path(path)
        if not path.is_file() or path.is_symlink():
            return False
        try:
            return bool(self.check(path.read_text(encoding="utf-8")))
        except Exception:
            return False


def json_report(name: str, check: Callable[[Any], bool]) -> ReportKind:
    """A JSON report kind: the parsed document must pass `check`."""
    return ReportKind(name, lambda text: check(json.loads(text)))


def check_report_file(path: Path, kind: ReportKind, option: str = "--out") -> None:
    """Raise OutputError unless `path` is free or holds our own `kind` report (replaced on a re-run)."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link: choose another {option} (kwsdeploy does not replace links).")
    if path.is_dir():
        raise OutputError(f"{path} is a directory, where kwsdeploy writes its {kind.name}: choose another {option}.")
    if path.exists() and not kind.holds(path):
        raise OutputError(f"{path} exists and is not a {kind.name} kwsdeploy wrote: choose another {option} "
                          "(kwsdeploy never replaces what it did not write), or remove it yourself.")


def write_report(path: Path, text: str, kind: ReportKind, option: str = "--out") -> Path:
    """Write a report atomically (temp sibling + rename), replacing only our own `kind` report."""
    check_report_file(path, kind, option)
    return write_file(path, text, overwrite=True, option=option)
