"""Bundle loading and verification (torch-free side): hashes, schema, metadata, golden parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from kwsdeploy import tolerances
from kwsdeploy.manifest import HashMismatchError, ManifestError, SchemaTooNewError
from kwsdeploy.runtime.bundle import load_bundle
from kwsdeploy.runtime.verify import verify_bundle


@pytest.fixture()
def bundle(tmp_path, reference_dir, tiny_steps) -> Path:
    return tiny_steps.export_tiny(tmp_path / "bundle", np.load(reference_dir / "features.npy")[:2],
                                  [str(i) for i in range(12)], modes=("step", "offline"))[1]


def test_verify_passes_with_golden_parity_numbers(bundle):
    checks = {c.path: c for c in verify_bundle(bundle)}
    assert set(checks) == {"model.onnx", "model.offline.onnx"}
    assert checks["model.onnx"].steps == 98 and checks["model.onnx"].max_abs <= tolerances.ONNX_PARITY_ATOL
    assert checks["model.offline.onnx"].max_abs <= tolerances.ONNX_PARITY_ATOL


@pytest.mark.parametrize("name", ["model.onnx", "golden.npz"])
def test_a_changed_byte_is_caught_and_the_file_named(bundle, name):
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match=rf"^{name}: sha256 mismatch"):
        verify_bundle(bundle)


def test_a_newer_schema_is_refused_with_upgrade_advice(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaTooNewError, match="schema version 99.*upgrade kwsdeploy"):
        load_bundle(bundle)


def test_a_graph_from_another_export_is_caught_by_its_metadata(bundle):
    proto = onnx.load(bundle / "model.onnx")
    for p in proto.metadata_props:
        if p.key == "kwsdeploy.manifest_sha256":
            p.value = "0" * 64
    onnx.save(proto, bundle / "model.onnx")
    m = json.loads((bundle / "manifest.json").read_text())
    from kwsdeploy.manifest import sha256_file

    m["hashes"]["model.onnx"] = sha256_file(bundle / "model.onnx")  # hashes fixed up: only metadata differs
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="model.onnx: its metadata"):
        verify_bundle(bundle)
    from kwsdeploy.runtime.runners import open_runner

    with pytest.raises(ManifestError, match="model.onnx: its metadata"):  # the runners check it at load too
        open_runner(bundle)


def test_missing_file_and_not_a_bundle(bundle, tmp_path):
    (bundle / "model.offline.onnx").unlink()
    with pytest.raises(ManifestError, match="model.offline.onnx: listed in the manifest but missing"):
        load_bundle(bundle)
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_bundle(tmp_path)


def test_a_schema_1_bundle_still_loads_verifies_and_streams(reference_dir):
    """tests/fixtures/bundle_v1 was written by kwsdeploy before schema 2 (see ATTRIBUTION.md)."""
    from kwsdeploy.runtime.runners import open_runner

    path = Path(__file__).parents[1] / "fixtures" / "bundle_v1"
    assert json.loads((path / "manifest.json").read_text())["schema_version"] == 1
    bundle = load_bundle(path)
    assert bundle.manifest.schema_version == 2 and bundle.manifest.files[0].format == "onnx"
    (check,) = verify_bundle(path)  # ONNX metadata identity still matches after the migration
    assert check.steps == 98 and check.max_abs <= tolerances.ONNX_PARITY_ATOL
    runner = open_runner(path)
    golden = bundle.golden()
    logits = runner.run(golden["step.features.input"])
    assert np.abs(logits - golden["step.features.logits"]).max() <= tolerances.ONNX_PARITY_ATOL
