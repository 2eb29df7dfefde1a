"""Jetson device bundles: one .tar.gz a user copies to the board, builds an engine from and runs.

Contents (under one top folder): the step ONNX graph(s) the precision needs, a device manifest
(the bundle's, restricted to what ships, detection settings filled in), golden.npz, `device.json`
(what run.py needs), `run.py` + `kws_detect.py` (numpy + TensorRT or ONNX Runtime; no torch, no
kwsdeploy), `build_engine.sh` and `bench.sh` (the device's TensorRT version decides the trtexec
flags: `jetson_scripts`), a README and SHA256SUMS. Written atomically; `verify_tarball` checks
safe member names, checksums, manifest hashes, the TensorRT parser check and the standalone runner
on the golden input. Torch-free.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from kwsdeploy.hashing import sha256_bytes, sha256_file
from kwsdeploy.exporters.jetson_scripts import SCRIPT_DIALECTS, bench_script, build_engine_script, device_readme
from kwsdeploy.trt import plan as tp

TARGET = "jetson"
CHECK_VERSIONS = ("10.3", "10.16", "11")
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "jetson"
DETECT_SOURCE = Path(__file__).resolve().parents[1] / "runtime" / "detect.py"
_STANDALONE_IMPORTS = {"__future__", "collections", "dataclasses", "typing", "math", "numpy"}
SUMS = "SHA256SUMS"
EXECUTABLE = ("run.py", "build_engine.sh", "bench.sh")
MAX_MEMBER_BYTES = 1 << 30


class DeviceBundleError(ValueError):
    """A device bundle that cannot be made, or a tarball that fails verification (the message says why)."""


@dataclass
class DeviceBundle:
    """The files of a device bundle, before they are packed."""

    top: str
    precision: str
    files: dict[str, bytes]
    compat: list = field(default_factory=list)  # CheckResult per graph and version
    plans: dict[str, Any] = field(default_factory=dict)  # dialect -> BuildPlan or the PlanError message


# -- building ---------------------------------------------------------------------------------------
def _runtime_imports(tree: ast.AST):
    """Import nodes of a module, skipping `if TYPE_CHECKING:` blocks (annotations only)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def standalone_detect_source() -> bytes:
    """kwsdeploy's detector, shipped as kws_detect.py; refused if it ever imports beyond stdlib + numpy
    at run time."""
    text = DETECT_SOURCE.read_text()
    for node in _runtime_imports(ast.parse(text)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        bad = [n for n in names if n.split(".")[0] not in _STANDALONE_IMPORTS]
        if bad or (isinstance(node, ast.ImportFrom) and node.level):
            raise DeviceBundleError(f"{DETECT_SOURCE.name} imports {bad or 'relatively'}: the device runner must "
                                    "stay numpy-only; keep the detector free of other imports.")
    return text.encode()


def _audio_step(manifest, precision: str):
    f = tp.step_file(manifest, precision, "audio")
    if f is None and precision == "fp32":
        kinds = sorted({x.input_kind for x in manifest.files if x.mode == "step"}) or ["none"]
        raise DeviceBundleError(f"the device runner streams audio, but the bundle's step graphs take {kinds}; "
                                "re-export with 'kwsdeploy export --frontend'.")
    return f


def device_bundle(bundle_dir: str | Path, precision: str = "fp32") -> DeviceBundle:
    """Everything a Jetson bundle of `precision` holds, from an export bundle (hashes checked first)."""
    from kwsdeploy.manifest import GOLDEN_NAME, MANIFEST_NAME, Manifest
    from kwsdeploy.precisions import get_precision
    from kwsdeploy.trt.compat import check_model

    if precision not in tp.PRECISIONS:
        raise DeviceBundleError(f"--precision must be one of {', '.join(tp.PRECISIONS)}, got {precision!r}.")
    root = Path(bundle_dir)
    manifest = Manifest.read(root)
    manifest.verify_hashes(root)
    if manifest.stream is None:
        raise DeviceBundleError(f"{root}: an offline-only bundle; export the step form (--mode step --frontend).")
    fp32 = _audio_step(manifest, "fp32")
    own = _audio_step(manifest, precision) if precision != "fp32" else fp32
    if precision == "int8" and own is None:
        raise DeviceBundleError("the bundle has no INT8 Q/DQ step graph of the TensorRT recipe with audio input; "
                                "export it with 'kwsdeploy export --frontend --int8' first.")
    run_file = own or fp32  # what run.py feeds ONNX Runtime (and trtexec builds from, where strongly typed)
    graphs = list(dict.fromkeys([fp32.path, run_file.path]))
    plans: dict[str, Any] = {}
    for version, dialect in SCRIPT_DIALECTS:
        try:
            plans[dialect] = tp.build_plan(manifest, precision, version, "audio")
        except tp.PlanError as exc:
            plans[dialect] = str(exc)
    compat = [r for g in graphs for r in check_model(root / g, CHECK_VERSIONS)]
    if not any(r.ok for r in compat if r.file == run_file.path):
        first = next(f for r in compat if r.file == run_file.path for f in r.findings)
        raise DeviceBundleError(f"no TensorRT version would parse {run_file.path}: {first.line()}; "
                                f"see 'kwsdeploy check-trt {root}'.")
    table = get_precision(run_file.precision if precision == "int8" else precision)
    spec = manifest.stream
    shipped = [f for f in manifest.files if f.path in graphs]
    dev_manifest = dataclasses.replace(
        manifest, files=tuple(shipped), detection=manifest.detection_settings,
        hashes={k: v for k, v in manifest.hashes.items() if k in (*graphs, GOLDEN_NAME)},
        sizes={k: v for k, v in manifest.sizes.items() if k in (*graphs, GOLDEN_NAME)},
    )
    shapes = tp.profile_shapes(run_file.inputs, 1)
    device = {
        "target": TARGET,
        "precision": precision,
        "onnx": run_file.path,
        "golden": run_file.golden or f"step.{run_file.input_kind}",
        "golden_atol": table.atol(frontend=True),
        "packet_frames": spec.packet_frames,
        "packet_samples": int(next(t for t in run_file.inputs if t.name == "audio").shape[1]),
        "inputs": {name: list(s[0][1:]) for name, s in shapes.items()},
        "tensorrt": {d: (p.onnx if isinstance(p, tp.BuildPlan) else None) for d, p in plans.items()},
    }
    top = f"{manifest.model.get('name', root.name)}-{TARGET}-{precision}"
    files: dict[str, bytes] = {g: (root / g).read_bytes() for g in graphs}
    files[GOLDEN_NAME] = (root / GOLDEN_NAME).read_bytes()
    files[MANIFEST_NAME] = dev_manifest.to_json().encode()
    files["device.json"] = (json.dumps(device, indent=1) + "\n").encode()
    files["run.py"] = (ASSETS / "run.py").read_bytes()
    files["kws_detect.py"] = standalone_detect_source()
    files["build_engine.sh"] = build_engine_script(precision, plans, shapes).encode()
    files["bench.sh"] = bench_script(precision, tp.at_batch(shapes, 1)).encode()
    files["README.md"] = device_readme(dev_manifest, device, plans, compat, top).encode()
    files[SUMS] = checksums(files).encode()
    return DeviceBundle(top, precision, files, compat, plans)


def checksums(files: Mapping[str, bytes]) -> str:
    """`sha256sum -c` lines for every file but SHA256SUMS itself."""
    return "".join(f"{sha256_bytes(data)}  {name}\n" for name, data in sorted(files.items()) if name != SUMS)


# -- packing ----------------------------------------------------------------------------------------
def pack(device: DeviceBundle, mtime: int = 0) -> bytes:
    """A deterministic .tar.gz: one top folder, files 0644 (scripts 0755), owner 0, fixed times."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            top = tarfile.TarInfo(device.top)
            top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(top)
            for name, data in sorted(device.files.items()):
                info = tarfile.TarInfo(f"{device.top}/{name}")
                info.size, info.mtime = len(data), mtime
                info.mode = 0o755 if name in EXECUTABLE else 0o644
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def write_device_bundle(bundle_dir: str | Path, out: str | Path, precision: str = "fp32",
                        overwrite: bool = False) -> DeviceBundle:
    """Build and write the .tar.gz atomically."""
    from kwsdeploy.atomic import write_file

    device = device_bundle(bundle_dir, precision)
    out = Path(out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise DeviceBundleError(f"--out {out}: give a .tar.gz file name.")
    write_file(out, pack(device), overwrite=overwrite, option="--out")
    return device


# -- verifying --------------------------------------------------------------------------------------
def safe_members(tar: tarfile.TarFile) -> tuple[str, list[tarfile.TarInfo]]:
    """The single top folder and the member list; anything but plain files and folders under one top
    folder with plain relative names is refused (no links, devices, absolute paths or '..')."""
    members = tar.getmembers()
    tops = set()
    for m in members:
        p = PurePosixPath(m.name)
        if (m.name.startswith("/") or "\\" in m.name or any(part in ("", ".", "..") for part in p.parts)
                or not p.parts):
            raise DeviceBundleError(f"unsafe member name {m.name!r} in the tarball; refusing to unpack it.")
        if not (m.isfile() or m.isdir()):
            raise DeviceBundleError(f"member {m.name!r} is a link or special file; refusing to unpack it.")
        if m.size > MAX_MEMBER_BYTES:
            raise DeviceBundleError(f"member {m.name!r} is {m.size} bytes; not a kwsdeploy device bundle.")
        tops.add(p.parts[0])
    if len(tops) != 1:
        raise DeviceBundleError(f"a device bundle has one top folder; this one has {sorted(tops) or 'none'}.")
    return tops.pop(), members


def unpack(path: str | Path, dest: str | Path) -> Path:
    """Safely unpack a device bundle into `dest`; returns its top folder (Python 3.11.2-safe: no filter=)."""
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeviceBundleError(f"{path}: not a .tar.gz file ({exc}).") from None
    with tar:
        top, members = safe_members(tar)
        root = Path(dest)
        for m in members:
            target = root.joinpath(*PurePosixPath(m.name).parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            target.write_bytes(src.read() if src is not None else b"")
            os.chmod(target, 0o755 if m.mode & 0o100 else 0o644)
    return root / top


@dataclass
class VerifyReport:
    """What `verify_tarball` checked."""

    top: str
    files: int
    compat: list
    golden: dict[str, Any]


def verify_tarball(path: str | Path, versions=CHECK_VERSIONS, python: str | None = None) -> VerifyReport:
    """Checksums, manifest (schema, hashes), TensorRT parser check, and run.py --golden on ONNX Runtime."""
    from kwsdeploy.manifest import Manifest, ManifestError
    from kwsdeploy.trt.compat import check_model

    with tempfile.TemporaryDirectory(prefix="kwsdeploy-verify-") as tmp:
        folder = unpack(path, tmp)
        sums = folder / SUMS
        if not sums.is_file():
            raise DeviceBundleError(f"{path}: no {SUMS}; not a kwsdeploy device bundle.")
        listed = {}
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
        present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {SUMS}
        if present != set(listed):
            raise DeviceBundleError(f"{SUMS} lists {sorted(set(listed) - present)} missing and "
                                    f"{sorted(present - set(listed))} unlisted files.")
        for name, digest in sorted(listed.items()):
            if sha256_file(folder / name) != digest:
                raise DeviceBundleError(f"{name}: sha256 differs from {SUMS}; the bundle was changed or damaged.")
        try:
            manifest = Manifest.read(folder)
            manifest.verify_hashes(folder)
        except ManifestError as exc:
            raise DeviceBundleError(str(exc)) from None
        device = json.loads((folder / "device.json").read_text())
        compat = [r for f in manifest.files if f.format == "onnx" for r in check_model(folder / f.path, versions)]
        if not any(r.ok for r in compat if r.file == device["onnx"]):
            raise DeviceBundleError(f"no TensorRT version in {list(versions)} would parse {device['onnx']}.")
        proc = subprocess.run([python or sys.executable, "run.py", "--golden", "--backend", "onnxruntime"],
                              cwd=folder, capture_output=True, text=True, timeout=600)
        try:
            golden = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeviceBundleError(f"run.py --golden failed (exit {proc.returncode}): "
                                    f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}") from None
        if proc.returncode != 0 or not golden.get("ok"):
            raise DeviceBundleError(f"run.py --golden: max |logits - golden| {golden.get('max_abs'):.3g} exceeds "
                                    f"{golden.get('atol'):g} on {golden.get('backend')}.")
        return VerifyReport(folder.name, len(listed) + 1, compat, golden)

