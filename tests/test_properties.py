"""Property-based tests (hypothesis): the readers of untrusted input (WAV files, bundle manifests,
checkpoint cards) and the CLI's numeric options either accept an input or refuse it with their own
one-line error, never with anything else."""

from __future__ import annotations

import io
import json
import math
import re
import struct

import numpy as np
import pytest
import soundfile as sf
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwsdeploy.audio import AudioError, load_audio, read_blocks
from kwsdeploy.cli._options import finite
from kwsdeploy.manifest import Manifest, ManifestError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=6)


def _wav_header(data_len: int, rate: int, channels: int, bits: int = 16, riff_len: int | None = None) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    riff = (riff_len if riff_len is not None else 4 + 8 + len(fmt) + 8 + data_len) & 0xFFFFFFFF
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + \
        b"data" + struct.pack("<I", data_len)


@FAST
@given(rate=st.integers(1, 200_000), channels=st.integers(1, 8), promised=st.integers(0, 2**32 - 1),
       body=st.binary(max_size=4000))
def test_any_wav_header_and_body_is_read_or_refused_as_audio_error(tmp_path_factory, rate, channels, promised, body):
    path = tmp_path_factory.mktemp("w") / "x.wav"
    path.write_bytes(_wav_header(promised, rate, channels) + body)
    try:
        x, info = load_audio(path)
    except AudioError as exc:
        assert "\n" not in str(exc)
        return
    assert x.dtype == np.float32 and x.ndim == 1 and np.isfinite(x).all()


@FAST
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes_are_read_or_refused_as_audio_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("b") / "x.wav"
    path.write_bytes(data)
    try:
        x, _ = load_audio(path)
    except AudioError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert x.dtype == np.float32 and np.isfinite(x).all()


@FAST
@given(samples=st.lists(st.floats(-1.0, 1.0, width=32), min_size=1, max_size=5000), channels=st.integers(1, 3),
       block=st.floats(0.001, 0.5))
def test_reading_in_blocks_gives_what_reading_whole_gives(tmp_path_factory, samples, channels, block):
    x = np.repeat(np.asarray(samples, dtype=np.float32)[:, None], channels, axis=1)
    path = tmp_path_factory.mktemp("r") / "x.wav"
    sf.write(str(path), x, 16000, subtype="PCM_16")
    whole, _ = load_audio(path)
    reader = read_blocks(path, 16000, block_seconds=block)
    parts = np.concatenate(list(reader))
    assert parts.shape == whole.shape and np.array_equal(parts, whole) and reader.samples == len(whole)


def _manifest_dict() -> dict:
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.contract import StateSpec, StreamSpec
    from kwsdeploy.manifest import ModelFile, TensorInfo, sha256_bytes

    spec = StreamSpec("exact", 1, 2, 98, 40, 3, (StateSpec("state.b0.conv", (40, 2)),), FeatureConfig.deployable())
    f = ModelFile(path="model.onnx", mode="step", precision="fp32", input_kind="features", opset=18,
                  inputs=(TensorInfo("features", ("batch", 40, 1)),), outputs=(TensorInfo("logits", ("batch", 3)),),
                  nodes=7, op_histogram={"Conv": 1}, parity_max_abs=3e-6, parity_atol=1e-4)
    m = Manifest(model={"name": "tcresnet8", "num_classes": 3}, labels=("yes", "no", "up"),
                 feature_config=FeatureConfig.deployable(), stream=spec, files=(f,),
                 hashes={"model.onnx": sha256_bytes(b"g")}, sizes={"model.onnx": 1})
    return json.loads(m.to_json())


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))


MANIFEST_PATHS = [p for p in _paths(_manifest_dict()) if p]


@settings(max_examples=150, deadline=None)
@given(where=st.sampled_from(MANIFEST_PATHS), value=JSON)
def test_a_manifest_with_any_field_replaced_is_read_or_refused_as_manifest_error(where, value):
    d = _manifest_dict()
    node = d
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    try:
        Manifest.from_json(json.dumps(d))
    except (ManifestError, ValueError) as exc:  # ValueError: a FeatureConfig range, one line too
        assert str(exc) and "\n" not in str(exc)


CARD_FIELDS = ["model", "num_classes", "n_mfcc", "labels", "feature_config", "weights_sha256", "weights_file",
               "model_config", "schema_version"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.models import create
    from kwsdeploy.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "ck", create("tcresnet8", num_classes=3), ["a", "b", "c"],
                           FeatureConfig.deployable())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(CARD_FIELDS), value=JSON)
def test_a_card_with_any_field_replaced_is_loaded_or_refused_as_checkpoint_error(checkpoint, tmp_path_factory, field, value):
    import shutil

    from kwsdeploy.train.checkpoint import CheckpointError, load_checkpoint

    ck = tmp_path_factory.mktemp("c") / "ck"
    shutil.copytree(checkpoint, ck)
    card = json.loads((ck / "card.json").read_text())
    card[field] = value
    (ck / "card.json").write_text(json.dumps(card))
    try:
        load_checkpoint(ck)
    except CheckpointError as exc:
        assert str(exc) and "\n" not in str(exc)


@FAST
@given(value=st.floats(allow_nan=True, allow_infinity=True), lo=st.floats(-10, 10), width=st.floats(0, 10),
       lo_open=st.booleans())
def test_finite_accepts_exactly_the_finite_numbers_in_range(value, lo, width, lo_open):
    hi = lo + width
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    check = finite(lo, hi, lo_open=lo_open)
    if ok:
        assert check(value) == value
    else:
        with pytest.raises(typer.BadParameter):
            check(value)


def _valid(option: str, text: str) -> bool:
    if option == "--packet-frames":
        # typer (pydantic, lax) reads a decimal integer, also spelt with a zero fraction ("2.0")
        m = re.fullmatch(r"([+-]?\d+)(\.0+)?", text)
        return m is not None and 1 <= int(m.group(1)) <= 100
    try:
        v = float(text)
    except ValueError:
        return False
    lo, hi, lo_open = {"--threshold": (0.0, 1.0, True), "--smoothing": (0.0, 10.0, False),
                       "--refractory": (0.0, 60.0, False)}[option]
    return math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi


@settings(max_examples=50, deadline=None)
@given(option=st.sampled_from(["--threshold", "--smoothing", "--packet-frames", "--refractory"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**9, 10**9).map(str),
                       st.floats(0, 1).map(repr), st.integers(0, 120).map(str),
                           st.text(alphabet="abc-_.,e", max_size=6)))
def test_numeric_options_are_refused_exactly_when_out_of_range(tmp_path_factory, option, value):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    missing = tmp_path_factory.getbasetemp() / "no-such-checkpoint"
    r = CliRunner().invoke(app, ["stream", "--checkpoint", str(missing), "x.wav", option, value])
    assert r.exit_code == 2 and "Traceback" not in r.output, (r.output, r.exception)
    # a valid number gets past the options (to the missing checkpoint); an invalid one is named
    assert ("no-such-checkpoint" in r.output) == _valid(option, value), (option, value, r.output)
