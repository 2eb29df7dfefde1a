"""Safe extraction and the verified, resumable download (a local file instead of the network)."""

from __future__ import annotations

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
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []
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
