"""Safe extraction and the verified, resumable download (a local file instead of the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from kwsdeploy.data import download as dl
from kwsdeploy.data.archive import UnsafeArchiveError, extract_archive
from kwsdeploy.data.gsc import prepare_gsc


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
    return path


@pytest.mark.parametrize(
    "member, why",
    [
        (("file", "../evil.txt", b"x"), "'..'"),
        (("file", "/tmp/evil.txt", b"x"), "absolute"),
        (("sym", "yes/link", "/etc/passwd"), "symbolic link"),
        (("sym", "yes/link", "../../outside"), "symbolic link"),
        (("hard", "yes/hard", "../../etc/passwd"), "hard link"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, member, why):
    arc = _tar(tmp_path / "bad.tar.gz", [("file", "yes/a.txt", b"ok"), member])
    dest = tmp_path / "out" / "tree"
    with pytest.raises(UnsafeArchiveError, match=why) as err:
        extract_archive(arc, dest)
    assert str(arc) in str(err.value) and "\n" not in str(err.value)
    assert not dest.exists() and not (tmp_path / "out").exists()  # refused before anything is made
    assert not (tmp_path / "evil.txt").exists()


def test_archive_option_extracts_and_prepares(gsc_tree, tmp_path):
    arc = tmp_path / "sc.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:  # like the official archive: no wrapping folder
        for p in sorted(gsc_tree.rglob("*")):
            tar.add(p, arcname=p.relative_to(gsc_tree).as_posix(), recursive=False)
    root = tmp_path / "root"
    out = prepare_gsc(root, data_version=1, class_split="sub", archive=arc, allow_download=False)
    assert (root / "speech_commands_v0.01" / "validation_list.txt").is_file()
    assert out == root / "gsc_v1_sub12" and (out / "train.jsonl").read_text().count("\n") == 108


class _Resp(io.BytesIO):
    def __init__(self, data: bytes, status: int):
        super().__init__(data)
        self.status = status


def _payload(n: int = 3 * 1024 * 1024 + 17) -> tuple[bytes, str]:
    data = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
    return data, hashlib.sha256(data).hexdigest()


def test_download_from_a_file_url_verifies_and_renames(tmp_path):
    data, digest = _payload()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    seen = []
    out = dl.download(src.as_uri(), tmp_path / "dl" / "a.tar.gz", len(data), digest, progress=lambda d, t: seen.append(d))
    assert out.read_bytes() == data and not (tmp_path / "dl" / "a.tar.gz.part").exists()
    assert seen[-1] == len(data) and len(seen) >= 4  # 1 MiB chunks


def test_download_resumes_a_part_file_with_a_range_request(tmp_path):
    data, digest = _payload()
    dest = tmp_path / "a.tar.gz"
    half = 1_234_567
    (tmp_path / "a.tar.gz.part").write_bytes(data[:half])
    asked = []

    def opener(req):
        asked.append(req.get_header("Range"))
        return _Resp(data[half:], 206)

    dl.download("http://example.invalid/a.tar.gz", dest, len(data), digest, opener=opener)
    assert asked == [f"bytes={half}-"] and dest.read_bytes() == data


def test_download_restarts_when_the_server_ignores_range(tmp_path):
    data, digest = _payload()
    (tmp_path / "a.part").write_bytes(b"junk")
    dl.download("http://x.invalid/a", tmp_path / "a", len(data), digest, opener=lambda req: _Resp(data, 200))
    assert (tmp_path / "a").read_bytes() == data


def test_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path):
    data, _ = _payload()
    with pytest.raises(dl.DownloadError, match="sha256"):
        dl.download("http://x.invalid/a", tmp_path / "a", len(data), "0" * 64, opener=lambda req: _Resp(data, 200))
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.part").exists()


def test_no_network_error_says_what_to_do(tmp_path):
    def opener(req):
        raise OSError("Name or service not known")

    with pytest.raises(dl.DownloadError, match="--archive"):
        prepare_gsc(tmp_path / "root", opener=opener)


def test_official_archive_figures():
    assert dl.GSC_ARCHIVES[1].size == 1_489_096_277 and dl.GSC_ARCHIVES[2].size == 2_428_923_189
    assert dl.GSC_ARCHIVES[2].sha256.startswith("af14739e") and dl.GSC_ARCHIVES[1].sha256.startswith("74393542")


def _big_tar(path: Path, n: int = 40) -> Path:
    """A gzip tar of n 8 KiB files of noise (incompressible, so a flipped byte lands in real data)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return _tar(path, [("file", f"yes/{i}.bin", rng.bytes(8192)) for i in range(n)])


@pytest.mark.parametrize("at", [0.3, 0.5, 0.8])
def test_a_gzip_archive_with_flipped_bytes_is_refused_before_anything_is_written(tmp_path, at):
    arc = _big_tar(tmp_path / "a.tar.gz")
    data = bytearray(arc.read_bytes())
    i = int(len(data) * at)
    data[i: i + 4] = bytes(b ^ 0x5A for b in data[i: i + 4])
    arc.write_bytes(bytes(data))
    dest = tmp_path / "out" / "tree"
    with pytest.raises(UnsafeArchiveError, match="corrupt|truncated") as err:
        extract_archive(arc, dest)
    assert "download it again" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_flipped_crc_alone_is_caught(tmp_path):
    arc = _big_tar(tmp_path / "a.tar.gz", n=4)
    data = bytearray(arc.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC32: only a read to the very end sees it
    arc.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError, match="corrupt"):
        extract_archive(arc, tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_archive_is_named_truncated(tmp_path, keep):
    arc = _big_tar(tmp_path / "a.tar.gz")
    data = arc.read_bytes()
    arc.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UnsafeArchiveError, match="truncated"):
        extract_archive(arc, tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_a_truncated_archive_is_one_line_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    arc = _big_tar(tmp_path / "a.tar.gz")
    arc.write_bytes(arc.read_bytes()[:-2000])
    r = CliRunner().invoke(app, ["data", "prepare-gsc", "--data-root", str(tmp_path / "root"), "--archive", str(arc),
                                 "--no-download"])
    assert r.exit_code != 0 and "truncated" in r.output and "Aborted" not in r.output
    assert r.output.strip().count("\n") == 0, r.output


def test_extraction_without_tarfile_filters_is_as_safe(tmp_path, monkeypatch, gsc_tree):
    """Debian 12's Python 3.11.2: no tarfile.data_filter and no filter= argument."""
    real = tarfile.TarFile.extractall
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}  # no warning on 3.12+

    def old_extractall(self, path=".", members=None, *, numeric_owner=False, **kw):
        assert not kw, f"extractall got {kw}: Python 3.11.2 has no filter="
        return real(self, path, members, numeric_owner=numeric_owner, **trusted)

    monkeypatch.delattr(tarfile, "data_filter", raising=False)  # already absent on Debian 12's 3.11.2
    monkeypatch.setattr(tarfile.TarFile, "extractall", old_extractall)
    info = tarfile.TarInfo("yes/run.sh")
    payload = b"#!/bin/sh\n"
    info.size, info.mode = len(payload), 0o4777  # setuid, world-writable
    arc = tmp_path / "m.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(payload))
    dest = extract_archive(arc, tmp_path / "tree")
    assert (dest / "yes" / "run.sh").stat().st_mode & 0o7777 == 0o755
    bad = _tar(tmp_path / "bad.tar.gz", [("sym", "yes/link", "../../outside")])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_archive(bad, tmp_path / "tree2")


def test_writing_through_a_link_of_the_archive_is_refused(tmp_path):
    arc = _tar(tmp_path / "l.tar.gz", [("sym", "yes/d", "."), ("file", "yes/d/x.txt", b"x")])
    with pytest.raises(UnsafeArchiveError, match="through a link"):
        extract_archive(arc, tmp_path / "tree")
    arc = _tar(tmp_path / "l2.tar.gz", [("sym", "a", "yes"), ("sym", "b", "a")])
    with pytest.raises(UnsafeArchiveError, match="another link"):
        extract_archive(arc, tmp_path / "tree")


def test_an_archive_named_like_the_release_is_held_to_its_sha256(tmp_path, monkeypatch, gsc_tree):
    arc = tmp_path / "speech_commands_v0.01.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for p in sorted(gsc_tree.rglob("*")):
            tar.add(p, arcname=p.relative_to(gsc_tree).as_posix(), recursive=False)
    fake = dl.ArchiveInfo("http://x.invalid/a", arc.name, arc.stat().st_size, "0" * 64)
    monkeypatch.setitem(dl.GSC_ARCHIVES, 1, fake)
    with pytest.raises(dl.DownloadError, match="sha256"):
        prepare_gsc(tmp_path / "root", data_version=1, archive=arc, allow_download=False)
    with pytest.raises(ValueError, match="--data-version 1"):
        prepare_gsc(tmp_path / "root", data_version=2, archive=arc, allow_download=False)
    monkeypatch.setitem(dl.GSC_ARCHIVES, 1, dataclasses.replace(fake, sha256=dl.sha256_file(arc)))
    out = prepare_gsc(tmp_path / "root", data_version=1, class_split="sub", archive=arc, allow_download=False)
    assert (out / "train.jsonl").is_file()
