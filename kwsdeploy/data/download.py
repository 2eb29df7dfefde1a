"""Resumable, verified download of the official Speech Commands archives (stdlib only).

A download goes to `<file>.part`, resumes from its length with an HTTP Range request, and is
renamed to its final name only once its size and sha256 match the published figures.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from kwsdeploy.hashing import sha256_file  # noqa: F401  (re-exported)

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveInfo:
    """Where an official archive lives and what it must hash to."""

    url: str
    filename: str
    size: int
    sha256: str


GSC_ARCHIVES: dict[int, ArchiveInfo] = {
    1: ArchiveInfo(
        url="http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        filename="speech_commands_v0.01.tar.gz",
        size=1_489_096_277,
        sha256="743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    ),
    2: ArchiveInfo(
        url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        filename="speech_commands_v0.02.tar.gz",
        size=2_428_923_189,
        sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    ),
}


class DownloadError(ValueError):
    """A download failed or its result does not match the expected size/checksum."""


def verify_file(path: Path, size: int, sha256: str) -> None:
    """Raise DownloadError unless `path` has exactly this size and sha256."""
    got = path.stat().st_size
    if got != size:
        raise DownloadError(f"{path} has {got} bytes, expected {size}: delete it and download again.")
    digest = sha256_file(path)
    if digest != sha256:
        raise DownloadError(
            f"{path} has sha256 {digest}, expected {sha256}: the file is corrupt; delete it and download again."
        )


Opener = Callable[[urllib.request.Request], object]
Progress = Callable[[int, int], None]


def download(
    url: str,
    dest: Path,
    size: int,
    sha256: str,
    opener: Optional[Opener] = None,
    progress: Optional[Progress] = None,
) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify size and sha256, then rename.

    `opener(request)` returns a file-like response (default: urllib.request.urlopen);
    `progress(done_bytes, total_bytes)` is called after every chunk.
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, size, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = opener or (lambda req: urllib.request.urlopen(req, timeout=60))
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # a stale or foreign .part: start over
        part.unlink()
        have = 0
    if have < size:
        req = urllib.request.Request(url)
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = opener(req)
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(
                f"cannot download {url} ({exc}); without network pass --archive PATH or an extracted tree."
            ) from None
        status = getattr(resp, "status", None) or getattr(resp, "code", None)
        mode = "ab"
        if have and status != 206:  # the server ignored the Range header: restart from zero
            have, mode = 0, "wb"
        try:
            with open(part, mode) as out:
                if progress:
                    progress(have, size)
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    have += len(block)
                    if progress:
                        progress(have, size)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(
                f"download of {url} interrupted after {have} bytes ({exc}); run the same command again to resume."
            ) from None
        finally:
            close = getattr(resp, "close", None)
            if close:
                close()
    try:
        verify_file(part, size, sha256)
    except DownloadError:
        if part.stat().st_size >= size:  # complete but wrong: never resume onto it
            part.unlink()
        raise
    os.replace(part, dest)
    return dest


def rich_progress(description: str) -> tuple[Progress, Callable[[], None]]:
    """A (callback, close) pair drawing a rich progress bar with bytes and speed."""
    from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TransferSpeedColumn

    bar = RichProgress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    task = bar.add_task(description, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop
