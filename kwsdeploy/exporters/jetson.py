"""Jetson device bundles: one .tar.gz a user copies to the board, builds an engine from and runs.

Contents (under one top folder): the step ONNX graph(s) the precision needs, a device manifest
(the bundle's, restricted to what ships, detection settings filled in), golden.npz, `device.json`
(what run.py needs), `run.py` + `kws_detect.py` (numpy + TensorRT or ONNX Runtime; no torch, no
kwsdeploy), `build_engine.sh` and `bench.sh` (the device's TensorRT version decides the trtexec
flags, from the same plans as `kwsdeploy engine build`), a README and SHA256SUMS. Written
atomically; `verify_tarball` checks safe member names, checksums, manifest hashes, the TensorRT
parser check and the standalone runner on the golden input. Torch-free.
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
from kwsdeploy.trt import plan as tp
from kwsdeploy.trt.versions import TARGETS

TARGET = "jetson"
CHECK_VERSIONS = ("10.3", "10.16", "11")
# One representative per trtexec dialect: weakly typed 10.x, strongly typed 10.12+, 11 (no precision flags).
SCRIPT_DIALECTS = (("10.3", "weak"), ("10.12", "strong10"), ("11.0", "eleven"))
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


# -- scripts ----------------------------------------------------------------------------------------
_VERSION_SH = r'''TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
trt_version() {
  # TRT_VERSION=10.3 overrides; else the Python package, the Debian package, then trtexec's banner.
  if [ -n "${TRT_VERSION:-}" ]; then echo "$TRT_VERSION"; return 0; fi
  v=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null) && [ -n "$v" ] && { echo "$v"; return 0; }
  for pkg in tensorrt libnvinfer-bin libnvinfer10 libnvinfer11; do
    v=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) && [ -n "$v" ] && { echo "$v"; return 0; }
  done
  n=$("$TRTEXEC" --help 2>&1 | sed -n 's/.*TensorRT v\([0-9][0-9]*\).*/\1/p' | head -n 1)
  [ -n "$n" ] && { echo "$((n / 10000)).$((n / 100 % 100))"; return 0; }
  echo "cannot tell the TensorRT version: set TRT_VERSION (e.g. TRT_VERSION=10.3 $0)" >&2
  return 1
}
VERSION=$(trt_version) || exit 2
MAJOR=${VERSION%%.*}
REST=${VERSION#*.}
MINOR=${REST%%[!0-9]*}
case "$MAJOR$MINOR" in *[!0-9]*|"") echo "unreadable TensorRT version '$VERSION'; set TRT_VERSION" >&2; exit 2;; esac
ENGINE="${ENGINE:-model.$PRECISION.trt$MAJOR.$MINOR.engine}"
'''


def _shell_cmd(argv: list[str]) -> str:
    """A trtexec argv as one shell line, the @ENGINE@/@TRTEXEC@ placeholders as variables."""
    return tp.format_command(argv).replace("@ENGINE@", '"$ENGINE"').replace("@TRTEXEC@", '"$TRTEXEC"')


def _branches(commands: Mapping[str, str]) -> str:
    return (
        f'if [ "$MAJOR" -ge 11 ]; then\n  {commands["eleven"]}\n'
        f'elif [ "$MAJOR" -eq 10 ] && [ "$MINOR" -ge 12 ]; then\n  {commands["strong10"]}\n'
        f'elif [ "$MAJOR" -eq 10 ]; then\n  {commands["weak"]}\n'
        'else\n  echo "TensorRT $VERSION is older than 10.0: use JetPack 6.1+ (TensorRT 10.3)" >&2; exit 2\nfi\n'
    )


def build_engine_script(precision: str, plans: Mapping[str, Any], shapes) -> str:
    """build_engine.sh: finds the TensorRT version, then runs the trtexec line of its dialect."""
    commands = {}
    for dialect, plan in plans.items():
        if isinstance(plan, tp.BuildPlan):
            argv = tp.trtexec_build_command(plan, shapes, plan.onnx, "@ENGINE@", tp.TIMING_CACHE_NAME,
                                            trtexec="@TRTEXEC@")
            commands[dialect] = _shell_cmd(argv)
        else:
            msg = "".join("\\" + c if c in '\\"$`' else c for c in str(plan))
            commands[dialect] = f'echo "TensorRT $VERSION: {msg}" >&2; exit 2'
    return (
        "#!/bin/sh\n# Build this bundle's TensorRT engine with the device's trtexec (flags chosen by its TensorRT version).\n"
        "# Usage: ./build_engine.sh   (TRT_VERSION=10.3, TRTEXEC=/path/to/trtexec, ENGINE=file override)\n"
        "set -eu\ncd \"$(dirname \"$0\")\"\n"
        f"PRECISION={precision}\n{_VERSION_SH}"
        'echo "TensorRT $VERSION: building $ENGINE ($PRECISION) with $TRTEXEC"\n'
        f"{_branches(commands)}"
        'echo "built $ENGINE; run: python3 run.py recording.wav"\n'
    )


def bench_script(precision: str, shapes_b1) -> str:
    """bench.sh: times the engine with trtexec at batch 1, host<->device copies included on every version."""
    commands = {}
    for version, dialect in SCRIPT_DIALECTS:
        argv = tp.trtexec_bench_command("@ENGINE@", shapes_b1, version, trtexec="@TRTEXEC@")
        commands[dialect] = _shell_cmd(argv) + ' "$@"'
    return (
        "#!/bin/sh\n# Time this bundle's engine with trtexec (batch 1; copies to and from the GPU included).\n"
        "# Usage: ./bench.sh [extra trtexec flags]   (build the engine first: ./build_engine.sh)\n"
        "set -eu\ncd \"$(dirname \"$0\")\"\n"
        f"PRECISION={precision}\n{_VERSION_SH}"
        '[ -f "$ENGINE" ] || { echo "no $ENGINE: run ./build_engine.sh first" >&2; exit 2; }\n'
        f"{_branches(commands)}"
    )


def device_readme(manifest, device: Mapping[str, Any], plans: Mapping[str, Any], compat, top: str) -> str:
    """The device README: targets, build, run, measure, and what was and was not verified on hardware."""
    name = manifest.model.get("name", "?")
    flags = []
    for (version, dialect) in SCRIPT_DIALECTS:
        p = plans[dialect]
        label = {"weak": "10.0 - 10.11", "strong10": "10.12 - 10.x", "eleven": "11.x"}[dialect]
        if isinstance(p, tp.BuildPlan):
            typing = "strongly typed" if p.strongly_typed else "weakly typed"
            flags.append(f"| {label} | `{p.onnx}` | {typing} | `{' '.join(p.trtexec_flags) or '-'}` |")
        else:
            flags.append(f"| {label} | - | cannot build | {p} |")
    checks = "\n".join(f"| `{r.file}` | {r.version} | {'OK' if r.ok else f'{len(r.findings)} problem(s): ' + r.findings[0].line()} |"
                       for r in compat)
    targets = "\n".join(f"- TensorRT {v}: {jp}" for v, jp in TARGETS.items())
    inputs = ", ".join(f"`{n}` {list(s)}" for n, s in device["inputs"].items())
    det = manifest.detection_settings
    return f"""# {top}: {name} for NVIDIA Jetson ({device['precision']})

Keyword spotting that streams audio in packets of {device['packet_samples']} samples
({device['packet_frames']} frames) through a recurrent step model; the MFCC frontend is inside the graph.
Labels: {', '.join(manifest.labels)}.

## Targets
{targets}

## Build the engine (on the device; an engine is tied to its GPU and TensorRT version)
```sh
./build_engine.sh            # writes model.{device['precision']}.trt<version>.engine and timing.cache
```
It reads the TensorRT version (Python package, Debian package or trtexec's banner; `TRT_VERSION=10.3`
overrides) and calls trtexec with min/opt/max shapes for every input (batch 1: {inputs}),
`--saveEngine`, `--timingCacheFile` and the precision flags that version has:

| TensorRT | graph | network | trtexec flags |
|---|---|---|---|
{chr(10).join(flags)}

## Run
```sh
python3 run.py recording.wav          # TensorRT engine when built, else ONNX Runtime (--backend to choose)
python3 run.py --golden               # the golden input vs the logits stored at export
```
Needs numpy plus TensorRT's Python package and cuda-python (or onnxruntime). No torch, no kwsdeploy.
Detection: threshold {det.threshold}, smoothing {det.smoothing_seconds} s, refractory {det.refractory_seconds} s
(manifest.json `detection`). Give 16 kHz mono PCM WAV for results identical to `kwsdeploy stream`.

## Measure
```sh
./bench.sh                            # trtexec latency at batch 1, host<->device copies included
```
On TensorRT 11 that needs `--includeDataTransfers` (the script adds it); 10.x includes the copies by
default (the script adds `--useCudaGraph --useSpinWait`, 11's defaults).

## What was verified, and what was not
Verified where the bundle was made (no GPU, no TensorRT): the TensorRT ONNX-parser check of every graph

| graph | TensorRT | check |
|---|---|---|
{checks}

the trtexec command lines (generated from the same build plans as `kwsdeploy engine build`), and
`run.py` on ONNX Runtime against the golden logits (`kwsdeploy bundle --verify`). Not verified: no
engine was built, run or timed on a Jetson or any GPU for this bundle; run `./build_engine.sh`,
`python3 run.py --golden --backend tensorrt` and `./bench.sh` on the device to do so.
Files: SHA256SUMS (`sha256sum -c SHA256SUMS`).
"""


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

