"""The shell scripts and README of a Jetson device bundle: `build_engine.sh` and `bench.sh` find the
device's TensorRT version and run the trtexec line of its dialect (from the same build plans as
`kwsdeploy engine build`); the README says what was and was not verified. Torch-free."""

from __future__ import annotations

from typing import Any, Mapping

from kwsdeploy.trt import plan as tp
from kwsdeploy.trt.versions import TARGETS

# One representative per trtexec dialect: weakly typed 10.x, strongly typed 10.12+, 11 (no precision flags).
SCRIPT_DIALECTS = (("10.3", "weak"), ("10.12", "strong10"), ("11.0", "eleven"))


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
Detection: threshold {det.threshold_text()}, smoothing {det.smoothing_seconds} s, softmax temperature
{det.temperature:g}, refractory {det.refractory_seconds} s (manifest.json `detection`). Give 16 kHz mono PCM WAV for results identical to `kwsdeploy stream`.

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
