"""The bundle manifest: what an exported bundle holds, as a versioned, torch-free dataclass.

`manifest.json` round-trips through `Manifest.to_json()` / `Manifest.from_json()`. Readers refuse a
manifest of a newer schema (upgrade kwsdeploy), and `verify_hashes(bundle_dir)` names any file whose
bytes changed since export. Exporters and the device runtime both read it; it imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import StreamSpec

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
GOLDEN_NAME = "golden.npz"
# Key of the manifest identity hash in every ONNX file's metadata_props.
ONNX_METADATA_KEY = "kwsdeploy.manifest_sha256"
MODES = ("step", "offline")
PRECISIONS = ("fp32", "fp16", "int8-tensorrt", "int8-cpu")
INPUT_KINDS = ("features", "audio")


class ManifestError(ValueError):
    """A manifest (or bundle) that cannot be used; the message says what is wrong and what to do."""


class SchemaTooNewError(ManifestError):
    """The bundle was written by a newer kwsdeploy than the one reading it."""


class HashMismatchError(ManifestError):
    """A bundle file's bytes differ from the sha256 recorded at export."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def _strict_fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check `data` has every required field of dataclass `cls` and nothing unknown."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}; is the bundle from another kwsdeploy version?")
    missing = [
        n for n, f in fields.items()
        if n not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}; the manifest is incomplete, re-export the bundle.")
    return dict(data)


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, shape ('batch' marks the dynamic axis) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorInfo":
        """Inverse of `to_dict`; unknown or missing fields are a ManifestError."""
        d = _strict_fields(cls, d, "tensor")
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"))


@dataclass(frozen=True)
class ModelFile:
    """One ONNX file of a bundle and what was measured on it at export."""

    path: str  # file name inside the bundle
    mode: str  # "step" | "offline"
    precision: str  # "fp32" | "fp16" | "int8-tensorrt" | "int8-cpu" (graph arithmetic; see io_dtype for I/O)
    input_kind: str  # "features" | "audio" (MFCC frontend inside the graph)
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: int
    op_histogram: Mapping[str, int]
    parity_max_abs: float  # max |ORT logits - torch logits| at export
    parity_atol: float  # the tolerance it had to meet
    golden: str = ""  # key prefix of this file's golden input/logits in golden.npz
    exporter: str = ""
    io_dtype: str = "float32"

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.mode, MODES, "mode"),
            (self.precision, PRECISIONS, "precision"),
            (self.input_kind, INPUT_KINDS, "input_kind"),
        ):
            if value not in allowed:
                raise ManifestError(f"{self.path}: {what} must be one of {allowed}, got {value!r}.")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "op_histogram", dict(self.op_histogram))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (op histogram sorted by op)."""
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["op_histogram"] = dict(sorted(self.op_histogram.items()))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelFile":
        """Inverse of `to_dict`; unknown or missing fields are a ManifestError."""
        d = _strict_fields(cls, d, f"file {d.get('path', '?')!r}")
        d["inputs"] = tuple(TensorInfo.from_dict(t) for t in d["inputs"])
        d["outputs"] = tuple(TensorInfo.from_dict(t) for t in d["outputs"])
        return cls(**d)


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle holds: model card, labels, features, step spec, files and their hashes."""

    model: Mapping[str, Any]  # registry name, family, num_classes, n_mfcc, streaming, config, ...
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    stream: StreamSpec | None  # None for an offline-only bundle
    files: tuple[ModelFile, ...]
    hashes: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256, every file but the manifest
    sizes: Mapping[str, int] = field(default_factory=dict)
    checkpoint: Mapping[str, Any] = field(default_factory=dict)  # source, weights sha256, random_init
    parity_data: str = ""  # what the export-time parity ran on
    accuracy: Mapping[str, Any] | None = None
    calibration: Mapping[str, Any] | None = None
    created: str = ""
    kwsdeploy_version: str = ""
    export_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "files", tuple(self.files))
        if self.model.get("num_classes") is not None and len(self.labels) != int(self.model["num_classes"]):
            raise ManifestError(
                f"manifest has {len(self.labels)} labels but the model has {self.model['num_classes']} classes."
            )
        names = [f.path for f in self.files]
        if len(set(names)) != len(names):
            raise ManifestError(f"manifest lists a file twice: {names}")

    # -- look-ups ---------------------------------------------------------------------------
    def file(self, mode: str = "step", precision: str = "fp32", input_kind: str | None = None) -> ModelFile:
        """The model file for a mode/precision (and input kind); a clear error when absent."""
        hits = [
            f for f in self.files
            if f.mode == mode and f.precision == precision and (input_kind is None or f.input_kind == input_kind)
        ]
        if not hits:
            have = ", ".join(f"{f.mode}/{f.precision}/{f.input_kind}" for f in self.files) or "none"
            raise ManifestError(
                f"bundle has no {mode} model in {precision}"
                + (f" with {input_kind} input" if input_kind else "")
                + f" (it has: {have}); re-export with the matching --mode/--fp16/--frontend."
            )
        return hits[0]

    def identity_sha256(self) -> str:
        """Hash of what the graphs compute (model, labels, features, stream, weights), stamped into ONNX."""
        core = {
            "schema_version": self.schema_version,
            "model": dict(self.model),
            "labels": list(self.labels),
            "feature_config": self.feature_config.to_dict(),
            "stream": self.stream.to_dict() if self.stream else None,
            "checkpoint": dict(self.checkpoint),
        }
        return sha256_bytes(json.dumps(core, sort_keys=True, separators=(",", ":")).encode())

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, as written to manifest.json."""
        return {
            "schema_version": self.schema_version,
            "kwsdeploy_version": self.kwsdeploy_version,
            "created": self.created,
            "model": dict(self.model),
            "labels": list(self.labels),
            "feature_config": self.feature_config.to_dict(),
            "stream": self.stream.to_dict() if self.stream else None,
            "files": [f.to_dict() for f in self.files],
            "hashes": dict(sorted(self.hashes.items())),
            "sizes": dict(sorted(self.sizes.items())),
            "checkpoint": dict(self.checkpoint),
            "parity_data": self.parity_data,
            "accuracy": dict(self.accuracy) if self.accuracy is not None else None,
            "calibration": dict(self.calibration) if self.calibration is not None else None,
            "export_seconds": self.export_seconds,
        }

    def to_json(self) -> str:
        """The manifest.json text."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Manifest":
        """Parse a manifest dict: a newer schema raises SchemaTooNewError, anything malformed ManifestError."""
        if not isinstance(data, Mapping):
            raise ManifestError("manifest.json is not a JSON object; re-export the bundle.")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ManifestError("manifest.json has no integer 'schema_version'; it is not a kwsdeploy bundle manifest.")
        if version > SCHEMA_VERSION:
            import kwsdeploy

            raise SchemaTooNewError(
                f"bundle manifest has schema version {version}, but kwsdeploy {kwsdeploy.__version__} reads "
                f"up to {SCHEMA_VERSION}: upgrade kwsdeploy (pip install -U kwsdeploy) to use this bundle."
            )
        if version < 1:
            raise ManifestError(f"manifest schema version {version} is not supported; re-export the bundle.")
        d = _strict_fields(cls, data, "manifest")
        try:
            d["feature_config"] = FeatureConfig.from_dict(d["feature_config"])
            d["stream"] = StreamSpec.from_dict(d["stream"]) if d["stream"] is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest: bad feature_config/stream ({exc}); re-export the bundle.") from None
        d["files"] = tuple(ModelFile.from_dict(f) for f in d["files"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        """Parse manifest.json text (see `from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest.json is not valid JSON ({exc}); re-export the bundle.") from None
        return cls.from_dict(data)

    @classmethod
    def read(cls, bundle_dir: str | Path) -> "Manifest":
        """Read `<bundle_dir>/manifest.json` (schema checked, hashes not: see `verify_hashes`)."""
        path = Path(bundle_dir) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{bundle_dir}: no {MANIFEST_NAME}; is this a bundle written by 'kwsdeploy export'?")
        return cls.from_json(path.read_text())

    def verify_hashes(self, bundle_dir: str | Path) -> None:
        """Raise naming the first file that is missing or whose sha256 differs from the manifest's."""
        bundle_dir = Path(bundle_dir)
        listed = {f.path for f in self.files}
        missing_hash = sorted(listed - set(self.hashes))
        if missing_hash:
            raise ManifestError(f"manifest lists {missing_hash} without a sha256; re-export the bundle.")
        for name, expected in sorted(self.hashes.items()):
            path = bundle_dir / name
            if not path.is_file():
                raise ManifestError(f"{name}: listed in the manifest but missing from {bundle_dir}; re-export the bundle.")
            got = sha256_file(path)
            if got != expected:
                raise HashMismatchError(
                    f"{name}: sha256 mismatch (expected {expected[:12]}..., got {got[:12]}...): "
                    "the file changed after export; re-export the bundle."
                )
