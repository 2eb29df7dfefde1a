"""Jetson device bundles: contents and checksums, run.py in a Python that has numpy and onnxruntime
but no torch and no kwsdeploy (same keywords as `kwsdeploy stream --bundle` on real clips), its
TensorRT path through the documented-API stand-in, build_engine.sh / bench.sh with a stand-in
trtexec (flags per TensorRT version), and `kwsdeploy bundle --verify` (incl. damaged/unsafe tarballs)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.exporters import jetson

runner = CliRunner()
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory, reference_dir):
    """The shipped tcresnet8-causal demo checkpoint exported with the MFCC frontend inside, fp32 + fp16."""
    from kwsdeploy.exporters.bundle import ParityData, export_bundle
    from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

    ck = load_checkpoint(demo_checkpoint_path("tcresnet8-causal"))
    audio = np.stack([sf.read(w, dtype="float32")[0] for w in sorted((reference_dir / "wavs").glob("*.wav"))[:2]])
    res = export_bundle(tmp_path_factory.mktemp("demo") / "tc", model=ck.model, labels=ck.labels,
                        feature_config=ck.feature_config, parity=ParityData(audio=audio, source="2 fixture clips"),
                        frontend=True, precisions=("fp32", "fp16"), exporter="legacy")
    return res.path


@pytest.fixture(scope="module")
def clip_sequence(tmp_path_factory, reference_dir):
    """The eight real 16 kHz fixture clips joined by 0.5 s of quiet noise, as 16-bit PCM WAV."""
    rng = np.random.default_rng(0)
    parts = []
    for w in sorted((reference_dir / "wavs").glob("*.wav")):
        parts += [sf.read(w, dtype="float32")[0], 0.003 * rng.standard_normal(8000).astype(np.float32)]
    path = tmp_path_factory.mktemp("wav") / "sequence.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def packed(demo_bundle, tmp_path_factory):
    """fp32 and fp16 device bundles, packed and unpacked."""
    out = {}
    for precision in ("fp32", "fp16"):
        tgz = tmp_path_factory.mktemp(precision) / f"tc-{precision}.tar.gz"
        r = runner.invoke(app, ["bundle", str(demo_bundle), "--target", "jetson", "--precision", precision,
                                "--out", str(tgz)])
        assert r.exit_code == 0, r.output
        out[precision] = (tgz, jetson.unpack(tgz, tgz.parent / "x"))
    return out


def _isolated_python(tmp: Path, extra: list[Path] = ()) -> list[str]:
    """argv prefix of a Python that sees only the stdlib, numpy, onnxruntime (and `extra` dirs): no torch,
    no kwsdeploy (site-packages and .pth files off; an import of either raises)."""
    import numpy
    import onnxruntime

    sp = tmp / "sp"
    if not sp.exists():
        sp.mkdir()
        for mod in (numpy, onnxruntime):
            src = Path(mod.__file__).parent
            (sp / src.name).symlink_to(src)
            libs = src.with_name(src.name + ".libs")
            if libs.exists():
                (sp / libs.name).symlink_to(libs)
    boot = (
        "import sys, runpy\n"
        "sys.path = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n"
        f"sys.path[:0] = {[str(p) for p in extra] + [str(sp)]!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'kwsdeploy'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = sys.argv[1:]\n"
        "sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(sys.argv[0])))\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'kwsdeploy')]\n"
    )
    return [sys.executable, "-S", "-E", "-c", boot]


def _events(d):
    return [(e["label"], round(e["time"], 6)) for e in d["detections"]], [e["score"] for e in d["detections"]]


def test_bundle_contents_checksums_and_device_manifest(packed, demo_bundle):
    from kwsdeploy.manifest import Manifest

    tgz, folder = packed["fp32"]
    with tarfile.open(tgz, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    top = "tcresnet8-causal-jetson-fp32"
    assert folder.name == top
    assert sorted(members) == [top] + [f"{top}/{n}" for n in sorted([
        "README.md", "SHA256SUMS", "bench.sh", "build_engine.sh", "device.json", "golden.npz", "kws_detect.py",
        "manifest.json", "model.onnx", "run.py"])]
    assert members[f"{top}/build_engine.sh"].mode == 0o755 and members[f"{top}/model.onnx"].mode == 0o644
    sums = dict(line.split("  ")[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert len(sums) == 9 and all(hashlib.sha256((folder / n).read_bytes()).hexdigest() == h for n, h in sums.items())
    m = Manifest.read(folder)
    m.verify_hashes(folder)
    assert [f.path for f in m.files] == ["model.onnx"] and m.detection == Manifest.read(demo_bundle).detection_settings
    device = json.loads((folder / "device.json").read_text())
    assert device["onnx"] == "model.onnx" and device["packet_samples"] == 1280 and device["packet_frames"] == 8
    assert device["inputs"]["state.frontend.samples"] == [320] and device["golden_atol"] == 2e-3
    assert (folder / "kws_detect.py").read_text() == jetson.DETECT_SOURCE.read_text()
    readme = (folder / "README.md").read_text()
    assert "Not verified: no\nengine was built" in readme and "JetPack 6.1 / 6.2" in readme
    assert (tgz.read_bytes() == jetson.pack(jetson.device_bundle(demo_bundle, "fp32")))  # deterministic
    # fp16: ships the fp16 graph too; ONNX Runtime on the device runs it
    fp16 = json.loads((packed["fp16"][1] / "device.json").read_text())
    assert fp16["onnx"] == "model.fp16.onnx" and fp16["golden_atol"] == 5e-2
    assert sorted(f.path for f in Manifest.read(packed["fp16"][1]).files) == ["model.fp16.onnx", "model.onnx"]


def test_run_py_without_torch_or_kwsdeploy_hears_what_kwsdeploy_stream_hears(packed, demo_bundle, clip_sequence, tmp_path):
    _, folder = packed["fp32"]
    ref = runner.invoke(app, ["stream", str(clip_sequence), "--bundle", str(demo_bundle), "--json",
                              "--backend", "onnxruntime"])
    assert ref.exit_code == 0, ref.output
    want, want_scores = _events(json.loads(ref.stdout))
    proc = subprocess.run([*_isolated_python(tmp_path), str(folder / "run.py"), str(clip_sequence), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["backend"] == "onnxruntime" and got["seconds"] == 12.0
    events, scores = _events(got)
    assert len(want) >= 5 and events == want  # the real clips fire keywords, the same ones at the same times
    assert np.allclose(scores, want_scores, atol=1e-6)
    text = subprocess.run([*_isolated_python(tmp_path), str(folder / "run.py"), str(clip_sequence)],
                          capture_output=True, text=True, timeout=300).stdout.splitlines()
    assert text[0] == "sequence.wav: 12.00 s through tcresnet8-causal (onnxruntime), hop 80 ms"
    assert len(text) == 1 + len(want) and text[1].split()[2] == want[0][0]


def test_run_py_tensorrt_path_through_the_stand_in(packed, clip_sequence, tmp_path):
    _, folder = packed["fp32"]
    shim = tmp_path / "shim"
    (shim / "cuda" / "bindings").mkdir(parents=True)
    shutil.copy(HERE / "fake_trt.py", shim / "fake_trt.py")
    (shim / "tensorrt.py").write_text("from fake_trt import FakeCudart, fake_tensorrt\n_cudart = FakeCudart()\n"
                                      "globals().update(vars(fake_tensorrt(_cudart)))\n")
    (shim / "cuda" / "__init__.py").write_text("")
    (shim / "cuda" / "bindings" / "__init__.py").write_text("")
    (shim / "cuda" / "bindings" / "runtime.py").write_text(
        "import tensorrt as _t\n_c = _t._cudart\n"
        "globals().update({k: getattr(_c, k) for k in dir(_c) if k.startswith('cuda')})\n")
    engine = folder / "model.fp32.trt10.3.engine"
    engine.write_bytes((folder / "model.onnx").read_bytes())  # the stand-in's engine is the graph
    try:
        py = _isolated_python(tmp_path, [shim])
        trt = subprocess.run([*py, str(folder / "run.py"), str(clip_sequence), "--json"], capture_output=True,
                             text=True, timeout=300)
        ort = subprocess.run([*py, str(folder / "run.py"), str(clip_sequence), "--json", "--backend", "onnxruntime"],
                             capture_output=True, text=True, timeout=300)
        gold = subprocess.run([*py, str(folder / "run.py"), "--golden", "--backend", "tensorrt"],
                              capture_output=True, text=True, timeout=300)
    finally:
        engine.unlink()
    assert trt.returncode == 0, trt.stderr
    a, b = json.loads(trt.stdout), json.loads(ort.stdout)
    assert a["backend"] == "tensorrt" and b["backend"] == "onnxruntime" and _events(a) == _events(b)
    g = json.loads(gold.stdout)
    assert gold.returncode == 0 and g["backend"] == "tensorrt" and g["ok"] and g["max_abs"] < 2e-3


def _fake_tools(tmp: Path, banner: str | None = None, dpkg: str | None = None) -> dict:
    """A PATH with a trtexec that records its argv (and prints `banner` for --help) and an optional dpkg-query."""
    bin_ = tmp / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "trtexec").write_text("#!/bin/sh\n"
                                  f"if [ \"$1\" = --help ]; then echo '{banner or ''}'; exit 0; fi\n"
                                  "printf '%s\\n' \"$@\" > \"$ARGS_OUT\"\n")
    (bin_ / "dpkg-query").write_text(f"#!/bin/sh\n{'echo ' + dpkg if dpkg else 'exit 1'}\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRT_VERSION", "ENGINE", "TRTEXEC")}
    env.update(PATH=f"{bin_}:{env['PATH']}", ARGS_OUT=str(tmp / "args.txt"), PYTHONNOUSERSITE="1")
    return env


@pytest.mark.parametrize("how, expect_version", [
    ({"TRT_VERSION": "10.3"}, "10.3"),
    ({"banner": "&&&& RUNNING TensorRT.trtexec [TensorRT v110401] # trtexec"}, "11.4"),
    ({"dpkg": "10.16.0.72-1+cuda13.0"}, "10.16"),
])
def test_build_engine_sh_finds_the_version_and_passes_its_flags(packed, tmp_path, how, expect_version):
    folder = packed["fp16"][1]
    env = _fake_tools(tmp_path, how.get("banner"), how.get("dpkg"))
    if "TRT_VERSION" in how:
        env["TRT_VERSION"] = how["TRT_VERSION"]
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"  # no python3 with tensorrt in front
    proc = subprocess.run(["sh", str(folder / "build_engine.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    args = (tmp_path / "args.txt").read_text().splitlines()
    engine = f"model.fp16.trt{expect_version}.engine"
    assert f"--saveEngine={engine}" in args and "--timingCacheFile=timing.cache" in args and "--skipInference" in args
    for flag in ("--minShapes", "--optShapes", "--maxShapes"):
        spec = next(a for a in args if a.startswith(flag + "=")).split("=", 1)[1].split(",")
        assert [s.split(":")[0] for s in spec][:3] == ["audio", "state.frontend.samples", "state.stem.conv"]
        assert len(spec) == 10 and spec[0] == "audio:1x1280"
    flags = {a for a in args if a in ("--fp16", "--int8", "--stronglyTyped", "--best")}
    onnx = next(a for a in args if a.startswith("--onnx="))
    if expect_version == "10.3":
        assert flags == {"--fp16"} and onnx == "--onnx=model.onnx"
    elif expect_version == "10.16":
        assert flags == {"--stronglyTyped"} and onnx == "--onnx=model.fp16.onnx"
    else:
        assert flags == set() and onnx == "--onnx=model.fp16.onnx"  # 11: no precision flags, fp16 graph
    assert f"built {engine}" in proc.stdout


@pytest.mark.parametrize("version", ["10.3", "11.4"])
def test_bench_sh_counts_host_device_copies_on_every_version(packed, tmp_path, version):
    folder = packed["fp32"][1]
    env = _fake_tools(tmp_path)
    env["TRT_VERSION"] = version
    missing = subprocess.run(["sh", str(folder / "bench.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "run ./build_engine.sh first" in missing.stderr
    engine = folder / f"model.fp32.trt{version}.engine"
    engine.write_bytes(b"x")
    try:
        proc = subprocess.run(["sh", str(folder / "bench.sh"), "--percentile=50,99"], env=env, capture_output=True,
                              text=True, timeout=60)
    finally:
        engine.unlink()
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[0] == f"--loadEngine={engine.name}" and args[1].startswith("--shapes=audio:1x1280,state.frontend.samples:1x320")
    assert args[-1] == "--percentile=50,99"
    if version == "10.3":
        assert "--includeDataTransfers" not in args and {"--useCudaGraph", "--useSpinWait"} <= set(args)
    else:
        assert "--includeDataTransfers" in args and "--useCudaGraph" not in args


def test_verify_accepts_the_bundle_and_refuses_damaged_or_unsafe_ones(packed, tmp_path):
    tgz, folder = packed["fp32"]
    r = runner.invoke(app, ["bundle", "--verify", str(tgz)])
    assert r.exit_code == 0, r.output
    assert "10 files, checksums and manifest hashes OK" in r.stdout
    assert "model.onnx: TensorRT 10.3: OK" in r.stdout and "run.py --golden (onnxruntime)" in r.stdout

    def repack(name, edit=None, extra=None):
        out = tmp_path / name
        with tarfile.open(tgz, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
            for m in src.getmembers():
                data = src.extractfile(m).read() if m.isfile() else None
                if data is not None and edit and m.name.endswith(edit[0]):
                    data = edit[1](data)
                    m.size = len(data)
                dst.addfile(m, io.BytesIO(data) if data is not None else None)
            if extra is not None:
                dst.addfile(extra, io.BytesIO(b"x") if extra.isfile() else None)
        return out

    damaged = repack("damaged.tar.gz", ("/model.onnx", lambda b: b[:-1] + bytes([b[-1] ^ 1])))
    r = runner.invoke(app, ["bundle", "--verify", str(damaged)])
    assert r.exit_code == 2 and "model.onnx: sha256 differs from SHA256SUMS" in r.output
    evil = tarfile.TarInfo("tcresnet8-causal-jetson-fp32/../../evil.txt")
    evil.size = 1
    r = runner.invoke(app, ["bundle", "--verify", str(repack("evil.tar.gz", extra=evil))])
    assert r.exit_code == 2 and "unsafe member name" in r.output and not (tmp_path.parent / "evil.txt").exists()
    link = tarfile.TarInfo("tcresnet8-causal-jetson-fp32/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    r = runner.invoke(app, ["bundle", "--verify", str(repack("link.tar.gz", extra=link))])
    assert r.exit_code == 2 and "link or special file" in r.output
    r = runner.invoke(app, ["bundle", "--verify", str(tmp_path / "nothing.tar.gz")])
    assert r.exit_code == 2 and "not a .tar.gz file" in r.output


def test_bundle_refusals(tiny_bundle, demo_bundle, tmp_path):
    r = runner.invoke(app, ["bundle", str(tiny_bundle), "--out", str(tmp_path / "t.tar.gz")])
    assert r.exit_code == 2 and "re-export with 'kwsdeploy export --frontend'" in r.output
    r = runner.invoke(app, ["bundle", str(demo_bundle), "--precision", "int8", "--out", str(tmp_path / "i.tar.gz")])
    assert r.exit_code == 2 and "no INT8 Q/DQ step graph" in r.output
    r = runner.invoke(app, ["bundle", str(demo_bundle), "--target", "pi", "--out", str(tmp_path / "p.tar.gz")])
    assert r.exit_code == 2 and "--target must be 'jetson'" in r.output
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_run_py_follows_the_manifests_detection_settings(demo_bundle, clip_sequence, tmp_path, temperature):
    """A bundle with its own (tuned) settings: run.py and `kwsdeploy stream --bundle` both use them."""
    import dataclasses

    from kwsdeploy.atomic import write_file
    from kwsdeploy.contract import DetectionSettings
    from kwsdeploy.manifest import Manifest

    tuned = tmp_path / "tuned"
    shutil.copytree(demo_bundle, tuned)
    m = Manifest.read(tuned)
    settings = DetectionSettings(threshold=0.95, smoothing_seconds=0.4, refractory_seconds=2.0, min_gap_seconds=1.0,
                                 temperature=temperature)
    write_file(tuned / "manifest.json", dataclasses.replace(m, detection=settings).to_json(), overwrite=True)
    tgz = tmp_path / "tuned.tar.gz"
    assert runner.invoke(app, ["bundle", str(tuned), "--out", str(tgz)]).exit_code == 0
    folder = jetson.unpack(tgz, tmp_path / "x")
    assert json.loads((folder / "manifest.json").read_text())["detection"]["threshold"] == 0.95
    ref = runner.invoke(app, ["stream", str(clip_sequence), "--bundle", str(tuned), "--json", "--backend", "onnxruntime"])
    assert ref.exit_code == 0, ref.output
    default = runner.invoke(app, ["stream", str(clip_sequence), "--bundle", str(demo_bundle), "--json",
                                  "--backend", "onnxruntime"])
    proc = subprocess.run([*_isolated_python(tmp_path), str(folder / "run.py"), str(clip_sequence), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got, want = _events(json.loads(proc.stdout))[0], _events(json.loads(ref.stdout))[0]
    assert got == want and 0 < len(got) < len(_events(json.loads(default.stdout))[0])  # stricter: fewer events
    assert json.loads(ref.stdout)["detection"].get("temperature", 1.0) == temperature
    if temperature != 1.0:  # sharper posteriors reach 0.95 more often: more events than the same settings at 1
        plain = tmp_path / "plain"
        shutil.copytree(tuned, plain)
        write_file(plain / "manifest.json", dataclasses.replace(
            m, detection=dataclasses.replace(settings, temperature=1.0)).to_json(), overwrite=True)
        at1 = runner.invoke(app, ["stream", str(clip_sequence), "--bundle", str(plain), "--json", "--backend",
                                  "onnxruntime"])
        assert at1.exit_code == 0, at1.output
        assert len(got) > len(_events(json.loads(at1.stdout))[0]) > 0


def test_run_py_without_any_runtime_says_what_to_install(packed, clip_sequence, tmp_path):
    import numpy

    only_numpy = tmp_path / "np"
    only_numpy.mkdir()
    (only_numpy / "numpy").symlink_to(Path(numpy.__file__).parent)
    boot = ("import sys, runpy; sys.path = [p for p in sys.path if 'site-packages' not in p]; "
            f"sys.path[:0] = [{str(packed['fp32'][1])!r}, {str(only_numpy)!r}]; "
            f"sys.argv = ['run.py', {str(clip_sequence)!r}]; "
            f"runpy.run_path({str(packed['fp32'][1] / 'run.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-S", "-E", "-c", boot], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: neither a TensorRT engine nor ONNX Runtime here: run ./build_engine.sh (JetPack's TensorRT) "
        "or pip install onnxruntime"]


def test_bundle_never_overwrites_without_overwrite(packed, demo_bundle):
    tgz = packed["fp32"][0]
    before = tgz.read_bytes()
    r = runner.invoke(app, ["bundle", str(demo_bundle), "--out", str(tgz)])
    assert r.exit_code == 2 and "--overwrite" in r.output and tgz.read_bytes() == before
    r = runner.invoke(app, ["bundle", str(demo_bundle), "--out", str(tgz), "--overwrite", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["top"] == "tcresnet8-causal-jetson-fp32"
    assert tgz.read_bytes() == before  # deterministic: the same bytes again
