"""`kwsdeploy doctor`: what is installed, what a missing piece disables, the CPU's features."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kwsdeploy.cli import doctor
from kwsdeploy.cli.main import app


def test_doctor_json_names_every_piece_and_the_cpu():
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    names = [p["name"] for p in d["pieces"]]
    assert names[:3] == ["torch", "onnxruntime", "tensorrt"] and "mamba-ssm" in names and "espeak-ng" in names
    by = {p["name"]: p for p in d["pieces"]}
    assert by["onnxruntime"]["present"] and "CPUExecutionProvider" in d["onnxruntime_providers"]
    assert d["cpu"]["cores_usable"] >= 1 and all(f in doctor.CPU_FLAGS for f in d["cpu"]["flags"])


def test_a_missing_piece_says_what_it_disables_and_how_to_install_it():
    def importer(name):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        if name == "mamba_ssm":
            raise OSError("libcudart.so.12: cannot open shared object file")  # a broken install
        return __import__(name)

    d = doctor.report(importer)
    by = {p["name"]: p for p in d["pieces"]}
    assert not by["tensorrt"]["present"] and "engine build" in by["tensorrt"]["enables"]
    assert by["tensorrt"]["install"].startswith("pip install 'kwsdeploy[trt]'")
    assert not by["mamba-ssm"]["present"] and by["mamba-ssm"]["detail"].startswith("OSError: libcudart")
    assert by["torch"]["present"] and by["torch"]["install"] is None
