"""The bundle manifest: what an exported bundle holds, as a versioned, torch-free dataclass.

`manifest.json` round-trips through `Manifest.to_json()` / `Manifest.from_json()`. Readers refuse a
manifest of a newer schema (upgrade kwsdeploy), migrate an older one step by step (`migrate`), and
`verify_hashes(bundle_dir)` names any file whose bytes changed since export. Exporters and the
device runtime both read it; it imports no torch. Its checks and errors live in
`kwsdeploy.manifest_checks` (re-exported here).

Schema 2 (schema 1 + migration): every file has a `format` (onnx | engine), its `precision` (a key
of `kwsdeploy.precisions.PRECISIONS`) and INT8 `recipe`, and engine facts for an engine file
(`EngineInfo`); the manifest may carry a calibration record (`Calibration`), an accuracy report
and detection settings (`kwsdeploy.contract.DetectionSettings`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kwsdeploy.config import FeatureConfig
from kwsdeploy.contract import DEFAULT_DETECTION, DetectionSettings, StreamSpec
from kwsdeploy.hashing import sha256_bytes, sha256_file  # noqa: F401  (re-exported)
from kwsdeploy.manifest_checks import (  # noqa: F401  (re-exported)
    HashMismatchError, ManifestError, SchemaTooNewError, check_labels, check_manifest, is_plain_name,
)  # fmt: skip
from kwsdeploy.precisions import PRECISIONS as _PRECISION_TABLE

SCHEMA_VERSION = 2
# What `identity_sha256` hashes has not changed since schema 1, so its version stays 1 and the
# graphs of a migrated bundle still carry a matching identity.
IDENTITY_VERSION = 1
MANIFEST_NAME = "manifest.json"
GOLDEN_NAME = "golden.npz"
# Key of the manifest identity hash in every ONNX file's metadata_props.
ONNX_METADATA_KEY = "kwsdeploy.manifest_sha256"
MODES = ("step", "offline")
PRECISIONS = tuple(_PRECISION_TABLE)
INPUT_KINDS = ("features", "audio")
FORMATS = ("onnx", "engine")


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


def _from_strict(cls: type, data: Any, where: str):
    """A small record dataclass from its dict (None stays None), unknown/missing fields a ManifestError."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected an object, got {type(data).__name__}; re-export the bundle.")
    return cls(**_strict_fields(cls, data, where))


@dataclass(frozen=True)
class EngineInfo:
    """What a TensorRT engine was built with and for: it runs only on a matching TensorRT and GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100/H200)
    source: str = ""  # the bundle's ONNX file it was built from
    extra: Mapping[str, Any] = field(default_factory=dict)  # builder flags, workspace, ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**dataclasses.asdict(self), "extra": dict(self.extra)}


@dataclass(frozen=True)
class Calibration:
    """How an INT8 graph was calibrated: on what, how many clips, which method and seed, and a hash
    of the ranges it produced (so two bundles can be told apart without their files)."""

    data: str
    clips: int
    method: str
    seed: int
    ranges_sha256: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**dataclasses.asdict(self), "extra": dict(self.extra)}


@dataclass(frozen=True)
class ModelFile:
    """One ONNX file of a bundle and what was measured on it at export."""

    path: str  # file name inside the bundle
    mode: str  # "step" | "offline"
    precision: str  # "fp32" | "fp16" (graph arithmetic; see io_dtype for inputs/outputs)
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
    format: str = "onnx"  # "onnx" | "engine" (TensorRT)
    recipe: str = ""  # INT8 recipe of the precision, if any
    engine: EngineInfo | None = None  # engine files only

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.mode, MODES, "mode"),
            (self.precision, PRECISIONS, "precision"),
            (self.input_kind, INPUT_KINDS, "input_kind"),
            (self.format, FORMATS, "format"),
        ):
            if value not in allowed:
                raise ManifestError(f"{self.path}: {what} must be one of {allowed}, got {value!r}.")
        if (self.format == "engine") != (self.engine is not None):
            raise ManifestError(f"{self.path}: an engine file needs engine facts, and only an engine file has them.")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "op_histogram", dict(self.op_histogram))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (op histogram sorted by op)."""
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        d["op_histogram"] = dict(sorted(self.op_histogram.items()))
        d["engine"] = self.engine.to_dict() if self.engine is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelFile":
        """Inverse of `to_dict`; unknown or missing fields are a ManifestError."""
        d = _strict_fields(cls, d, f"file {d.get('path', '?')!r}")
        d["inputs"] = tuple(TensorInfo.from_dict(t) for t in d["inputs"])
        d["outputs"] = tuple(TensorInfo.from_dict(t) for t in d["outputs"])
        d["engine"] = _from_strict(EngineInfo, d.get("engine"), f"file {d['path']!r} engine")
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
    accuracy: Mapping[str, Any] | None = None  # the accuracy report measured at export
    calibration: Calibration | None = None  # INT8 calibration record
    # keyword-event settings (None: DEFAULT_DETECTION); `kwsdeploy tune` rewrites them. Outside
    # identity_sha256 and the file hashes, so tuning leaves the graphs valid.
    detection: DetectionSettings | None = None
    created: str = ""
    kwsdeploy_version: str = ""
    export_seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "files", tuple(self.files))
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", _from_strict(Calibration, self.calibration, "calibration"))
        if isinstance(self.detection, Mapping):
            object.__setattr__(self, "detection", DetectionSettings.from_dict(self.detection))
        if self.model.get("num_classes") is not None and len(self.labels) != int(self.model["num_classes"]):
            raise ManifestError(
                f"manifest has {len(self.labels)} labels but the model has {self.model['num_classes']} classes."
            )
        names = [f.path for f in self.files]
        if len(set(names)) != len(names):
            raise ManifestError(f"manifest lists a file twice: {names}")
        check_manifest(self)

    # -- look-ups ---------------------------------------------------------------------------
    def file(
        self, mode: str = "step", precision: str = "fp32", input_kind: str | None = None, format: str = "onnx"
    ) -> ModelFile:
        """The model file for a mode/precision/format (and input kind); a clear error when absent."""
        hits = [
            f for f in self.files
            if f.mode == mode and f.precision == precision and f.format == format
            and (input_kind is None or f.input_kind == input_kind)
        ]
        if not hits:
            have = ", ".join(
                f"{f.mode}/{f.precision}/{f.input_kind}" + ("" if f.format == "onnx" else f" ({f.format})")
                for f in self.files
            ) or "none"
            raise ManifestError(
                f"bundle has no {mode} model in {precision}" + ("" if format == "onnx" else f" as {format}")
                + (f" with {input_kind} input" if input_kind else "")
                + f" (it has: {have}); re-export with the matching --mode/--fp16/--frontend."
            )
        return hits[0]

    @property
    def detection_settings(self) -> DetectionSettings:
        """The bundle's detection settings, or the defaults when it has none."""
        return self.detection or DEFAULT_DETECTION

    def identity_sha256(self) -> str:
        """Hash of what the graphs compute (model, labels, features, stream, weights), stamped into ONNX."""
        core = {
            "schema_version": IDENTITY_VERSION,
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
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "detection": self.detection.to_dict() if self.detection is not None else None,
            "export_seconds": self.export_seconds,
        }

    def to_json(self) -> str:
        """The manifest.json text."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Manifest":
        """Parse a manifest dict: a newer schema raises SchemaTooNewError, anything malformed ManifestError
        (a field of the wrong type included: a manifest from disk is untrusted input)."""
        try:
            return cls._parse(data)
        except ManifestError:
            raise
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ManifestError(f"manifest.json is malformed ({text}); re-export the bundle.") from None

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> "Manifest":
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
        d = _strict_fields(cls, migrate(data), "manifest")
        try:
            d["feature_config"] = FeatureConfig.from_dict(d["feature_config"])
            d["stream"] = StreamSpec.from_dict(d["stream"]) if d["stream"] is not None else None
            d["detection"] = DetectionSettings.from_dict(d["detection"]) if d.get("detection") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest: bad feature_config/stream/detection ({exc}); re-export the bundle.") from None
        d["files"] = tuple(ModelFile.from_dict(f) for f in d["files"])
        d["calibration"] = _from_strict(Calibration, d.get("calibration"), "manifest calibration")
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


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: files gain format/recipe/engine, the manifest gains detection; calibration
    (never written by schema 1) must be empty."""
    if d.get("calibration") is not None:
        raise ManifestError("schema 1 manifest has a calibration record, which schema 1 never wrote; re-export the bundle.")
    files = [{**f, "format": "onnx", "recipe": "", "engine": None} if isinstance(f, Mapping) else f
             for f in d.get("files", [])]
    return {**d, "files": files, "detection": None, "schema_version": 2}


_MIGRATIONS = {1: _v1_to_v2}  # from version N to N + 1


def migrate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest dict of any supported schema brought to SCHEMA_VERSION, one step at a time."""
    d = dict(data)
    version = d.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"manifest schema version {version!r} is not supported; re-export the bundle.")
    while d["schema_version"] < SCHEMA_VERSION:
        d = _MIGRATIONS[d["schema_version"]](d)
    return d
