"""The bundle manifest: JSON round trip, schema versioning, hashes, validation messages."""

from __future__ import annotations

import json

import pytest

from kwsdeploy.config import FeatureConfig
from kwsdeploy.manifest import (
    SCHEMA_VERSION,
    HashMismatchError,
    Manifest,
    ManifestError,
    ModelFile,
    SchemaTooNewError,
    TensorInfo,
    sha256_bytes,
)
from kwsdeploy.contract import StateSpec, StreamSpec


def _manifest(**kw) -> Manifest:
    spec = StreamSpec("exact", 1, 2, 98, 40, 3, (StateSpec("state.b0.conv", (40, 2)),), FeatureConfig.deployable())
    f = ModelFile(
        path="model.onnx", mode="step", precision="fp32", input_kind="features", opset=18,
        inputs=(TensorInfo("features", ("batch", 40, 1)), TensorInfo("state.b0.conv", ("batch", 40, 2))),
        outputs=(TensorInfo("logits", ("batch", 3)), TensorInfo("new_state.b0.conv", ("batch", 40, 2))),
        nodes=7, op_histogram={"Conv": 1, "Concat": 1}, parity_max_abs=3e-6, parity_atol=1e-4, golden="step.features",
    )
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
    assert back.schema_version == SCHEMA_VERSION == 1
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
    with pytest.raises(SchemaTooNewError, match=r"schema version 2, .*reads up to 1: upgrade kwsdeploy"):
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
