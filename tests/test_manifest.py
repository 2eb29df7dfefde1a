"""The bundle manifest: JSON round trip, schema versioning, hashes, validation messages."""

from __future__ import annotations

import json

import pytest

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import DEFAULT_DETECTION, DetectionSettings, StateSpec, StreamSpec
from kwsdeploy.manifest import (
    PRECISIONS,
    SCHEMA_VERSION,
    Calibration,
    EngineInfo,
    HashMismatchError,
    Manifest,
    ManifestError,
    ModelFile,
    SchemaTooNewError,
    TensorInfo,
    migrate,
    sha256_bytes,
)
from kwsdeploy.precisions import PRECISIONS as TABLE


def _file(**kw) -> ModelFile:
    base = dict(
        path="model.onnx", mode="step", precision="fp32", input_kind="features", opset=18,
        inputs=(TensorInfo("features", ("batch", 40, 1)), TensorInfo("state.b0.conv", ("batch", 40, 2))),
        outputs=(TensorInfo("logits", ("batch", 3)), TensorInfo("new_state.b0.conv", ("batch", 40, 2))),
        nodes=7, op_histogram={"Conv": 1, "Concat": 1}, parity_max_abs=3e-6, parity_atol=1e-4, golden="step.features",
    )
    base.update(kw)
    return ModelFile(**base)


def _manifest(**kw) -> Manifest:
    spec = StreamSpec("exact", 1, 2, 98, 40, 3, (StateSpec("state.b0.conv", (40, 2)),), FeatureConfig.deployable())
    f = _file()
    base = dict(model={"name": "tcresnet8", "num_classes": 3}, labels=("yes", "no", "up"),
                feature_config=FeatureConfig.deployable(), stream=spec, files=(f,),
                hashes={"model.onnx": sha256_bytes(b"graph")}, sizes={"model.onnx": 5})
    base.update(kw)
    return Manifest(**base)


def test_round_trip_through_json_is_lossless():
    m = _manifest(accuracy={"top1": 0.93}, checkpoint={"weights_sha256": "ab" * 32})
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert back.to_json() == m.to_json()
    assert back.schema_version == SCHEMA_VERSION == 2
    assert back.stream.states[0].shape == (40, 2) and back.files[0].inputs[0].shape == ("batch", 40, 1)
    assert back.file("step").nodes == 7


def test_identity_hash_ignores_file_hashes_but_not_weights():
    m = _manifest()
    assert len(m.identity_sha256()) == 64
    assert _manifest(hashes={"model.onnx": "0" * 64}).identity_sha256() == m.identity_sha256()
    assert _manifest(checkpoint={"weights_sha256": "1"}).identity_sha256() != m.identity_sha256()


def test_newer_schema_is_refused_with_upgrade_advice():
    d = _manifest().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaTooNewError, match=r"schema version 3, .*reads up to 2: upgrade kwsdeploy"):
        Manifest.from_dict(d)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("labels"), r"missing field\(s\) \['labels'\]"),
        (lambda d: d.update(colour="red"), r"unknown field\(s\) \['colour'\]"),
        (lambda d: d["files"][0].update(mode="train"), "mode must be one of"),
        (lambda d: d.update(labels=["a"]), "1 labels but the model has 3 classes"),
        (lambda d: d.pop("schema_version"), "no integer 'schema_version'"),
    ],
)
def test_invalid_manifests_fail_with_clear_messages(mutate, message):
    d = json.loads(_manifest().to_json())
    mutate(d)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(d)


def test_hash_mismatch_names_the_file(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    m = _manifest()
    m.verify_hashes(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"grapH")
    with pytest.raises(HashMismatchError, match=r"^model.onnx: sha256 mismatch \(expected eef93e1d1448\.\.\., got f2315e0ce55c"):
        m.verify_hashes(tmp_path)


def test_missing_model_file_lookup_says_what_exists():
    with pytest.raises(ManifestError, match=r"no offline model in fp32 \(it has: step/fp32/features\)"):
        _manifest().file("offline")


def test_invalid_json_is_one_clear_error():
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json("{nope")


ENGINE = EngineInfo("10.3.0", "Orin", "8.7", source="model.fp16.onnx", extra={"workspace_mb": 256})
CALIBRATION = Calibration("fsdd train (real speech)", 64, "percentile-99.99", 0, "cd" * 32, extra={"recipe": "cpu"})


def test_schema_2_fields_round_trip():
    engine = _file(path="model.fp16.engine", precision="fp16", format="engine", engine=ENGINE, parity_atol=5e-2)
    int8 = _file(path="model.int8-cpu.onnx", precision="fp16", recipe="cpu")
    m = _manifest(files=(_file(), engine, int8), calibration=CALIBRATION,
                  detection=DetectionSettings(threshold=0.8, smoothing_seconds=0.3, refractory_seconds=1.5),
                  accuracy={"fp32": {"top1": 0.9}, "int8-cpu": {"top1": 0.89}})
    back = Manifest.from_json(m.to_json())
    assert back == m and back.to_json() == m.to_json()
    assert back.file("step", "fp16", format="engine").engine.compute_capability == "8.7"
    assert back.file("step", "fp16").path == "model.int8-cpu.onnx"  # format defaults to onnx
    assert back.calibration.ranges_sha256 == "cd" * 32 and back.detection_settings.threshold == 0.8
    assert json.loads(m.to_json())["files"][1]["engine"]["tensorrt_version"] == "10.3.0"


def test_dicts_are_accepted_for_calibration_and_detection():
    m = _manifest(calibration=CALIBRATION.to_dict(), detection={"threshold": 0.9})
    assert m.calibration == CALIBRATION and m.detection == DetectionSettings(threshold=0.9)


def test_detection_defaults_are_todays_constants():
    from kwsdeploy.cli import stream

    assert _manifest().detection is None and _manifest().detection_settings == DEFAULT_DETECTION
    assert (stream.THRESHOLD, stream.SMOOTHING_S, stream.REFRACTORY_S) == (0.7, 0.2, 1.2)
    assert DEFAULT_DETECTION == DetectionSettings(0.7, 0.2, 1.2)
    assert DEFAULT_DETECTION.smoothing_packets(0.1) == 2 and DEFAULT_DETECTION.smoothing_packets(0.5) == 1


def test_known_precisions_are_the_precision_table():
    assert PRECISIONS == tuple(TABLE) and PRECISIONS[:2] == ("fp32", "fp16")
    with pytest.raises(ManifestError, match="precision must be one of"):
        _file(precision="int3")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(format="engine"), "an engine file needs engine facts"),
        (dict(engine=ENGINE), "only an engine file has them"),
        (dict(format="plan"), "format must be one of"),
    ],
)
def test_engine_facts_go_with_engine_files(kw, message):
    with pytest.raises(ManifestError, match=message):
        _file(**kw)


def test_bad_records_are_manifest_errors():
    d = _manifest(calibration=CALIBRATION).to_dict()
    d["calibration"].pop("seed")
    with pytest.raises(ManifestError, match=r"calibration: missing field\(s\) \['seed'\]"):
        Manifest.from_dict(d)
    d = _manifest().to_dict()
    d["detection"] = {"threshold": 2.0}
    with pytest.raises(ManifestError, match=r"threshold is a probability"):
        Manifest.from_dict(d)


def _as_v1(d: dict) -> dict:
    """A schema-1 dict as kwsdeploy 0.1 wrote it: no format/recipe/engine, no detection."""
    d = json.loads(json.dumps(d))
    d["schema_version"] = 1
    d.pop("detection")
    for f in d["files"]:
        for k in ("format", "recipe", "engine"):
            f.pop(k)
    return d


def test_schema_1_migrates_to_2_with_the_same_identity():
    m = _manifest(accuracy={"top1": 0.5})
    v1 = _as_v1(m.to_dict())
    migrated = migrate(v1)
    assert migrated["schema_version"] == 2 and migrated["detection"] is None
    assert migrated["files"][0]["format"] == "onnx" and migrated["files"][0]["engine"] is None
    back = Manifest.from_dict(v1)
    assert back == m and back.identity_sha256() == m.identity_sha256()
    assert v1["schema_version"] == 1 and "format" not in v1["files"][0]  # the input is not modified


def test_schema_1_with_a_calibration_record_is_refused():
    v1 = _as_v1(_manifest().to_dict())
    v1["calibration"] = {"clips": 3}
    with pytest.raises(ManifestError, match="schema 1 never wrote"):
        Manifest.from_dict(v1)


def test_schema_0_is_refused():
    d = _manifest().to_dict()
    d["schema_version"] = 0
    with pytest.raises(ManifestError, match="schema version 0 is not supported"):
        Manifest.from_dict(d)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(labels=["yes", "yes", "up"]), "label 'yes' appears twice"),
    (lambda d: d.update(labels=["yes", "", "up"]), "not a non-empty string"),
    (lambda d: d["files"][0].update(path="../../outside.onnx"), "not a plain file name"),
    (lambda d: d["hashes"].update({"/etc/passwd": "0" * 64}), "not a plain file name"),
    (lambda d: d["hashes"].update({"model.onnx": "xyz"}), "not 64 hex digits"),
    (lambda d: d["stream"].update(packet_frames=0), "stream.packet_frames = 0"),
    (lambda d: d["stream"].update(num_classes=5), "stream.num_classes = 5 but 3 labels"),
    (lambda d: d["feature_config"].update(hop_length=0), "hop_length = 0"),
    (lambda d: d["stream"]["feature_config"].update(n_fft=-1), "n_fft = -1"),
])
def test_a_tampered_manifest_is_refused_on_read(change, message):
    d = json.loads(_manifest().to_json())
    change(d)
    with pytest.raises(ManifestError if "hop_length" not in message and "n_fft" not in message else ValueError,
                       match=message):
        Manifest.from_dict(d)
