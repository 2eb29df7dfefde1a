"""train --teacher: the distillation loss, the teacher's label order and a run that uses it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint
from kwsdeploy.train.distill import Teacher, TeacherEnsemble, distillation_loss, label_order, load_teacher, teacher_paths


def _softmax(z, t):
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / t)
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_weighted_sum_of_label_and_soft_target_terms():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g) * 3, torch.randn(5, 4, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 1])
    w, temp, ls = 0.3, 2.5, 0.1
    ps, pt = _softmax(s.numpy().astype(np.float64), temp), _softmax(t.numpy().astype(np.float64), temp)
    kl = float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))) * temp ** 2
    hard = float(F.cross_entropy(s, y, label_smoothing=ls))
    got = float(distillation_loss(s, t, y, w, temp, ls))
    assert math.isclose(got, (1 - w) * hard + w * kl, rel_tol=1e-5)
    assert math.isclose(float(distillation_loss(s, t, y, 0.0, temp, ls)), hard, rel_tol=1e-6)
    # the soft term vanishes when the student already agrees with the teacher
    assert math.isclose(float(distillation_loss(s, s.clone(), y, 1.0, temp)), 0.0, abs_tol=1e-6)


def test_gradient_pulls_the_student_towards_the_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[4.0, 0.0, 0.0]])
    distillation_loss(s, t, torch.tensor([2]), 1.0, 1.0).backward()  # weight 1: the label does not count
    assert s.grad[0, 0] < 0 < s.grad[0, 1]  # descent raises class 0 (the teacher's), lowers the others
    assert math.isclose(float(s.grad.sum()), 0.0, abs_tol=1e-6)


def test_label_order_maps_by_name_and_refuses_a_teacher_that_lacks_a_label():
    assert label_order(["b", "a", "c"], ["a", "b", "c"], "T") == [1, 0, 2]
    assert label_order(["b", "x", "a"], ["a", "b"], "T") == [2, 0]  # the teacher's extra label is left out
    with pytest.raises(ValueError, match="--teacher T does not know d, e: give a teacher"):
        label_order(["a", "b", "c"], ["a", "b", "d", "e"], "T")


def test_teacher_scores_waveforms_in_the_students_label_order():
    path = demo_checkpoint_path("tcresnet8-causal")
    ckpt = load_checkpoint(path)
    student_labels = list(reversed(ckpt.labels))
    teacher = Teacher(path, student_labels, torch.device("cpu"))
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.05
    got = teacher.logits(torch.cat([torch.zeros(2, 4000), wave], dim=1))  # a context prefix is cut off
    from kwsdeploy.features import MFCC

    want = ckpt.model.eval()(MFCC(ckpt.feature_config)(wave).unsqueeze(1))
    torch.testing.assert_close(got, want.flip(1), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_a_run_with_a_teacher_records_it_and_its_loss_differs(tiny_prepared, tmp_path):
    from kwsdeploy.train.presets import get_preset
    from kwsdeploy.train.run import train

    base = get_preset("demo").with_overrides(model="tcresnet8-causal", epochs=1, threads=1, seed=0)
    plain = train(base, tiny_prepared, tmp_path / "plain", progress=False)
    taught_cfg = base.with_overrides(teacher=str(demo_checkpoint_path("tcresnet8-causal")), distill_weight=0.7)
    taught = train(taught_cfg, tiny_prepared, tmp_path / "taught", progress=False)
    loss = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
            for d in ("plain", "taught")]
    assert plain.rank == taught.rank == 0
    assert loss[0] != pytest.approx(loss[1], rel=1e-3)  # same seed and batches: only the loss differs
    config = json.loads((tmp_path / "taught" / "config.json").read_text())
    assert config["teacher"].endswith("tcresnet8-causal") and config["distill_weight"] == 0.7


def test_bad_distillation_settings_are_refused():
    from kwsdeploy.train.presets import TrainConfig

    with pytest.raises(ValueError, match="distill_weight must be in"):
        TrainConfig(distill_weight=1.5)
    with pytest.raises(ValueError, match="distill_temperature > 0"):
        TrainConfig(distill_temperature=0.0)


def test_cli_teacher_errors_are_one_line_and_write_nothing(tiny_prepared, tmp_path):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    runner = CliRunner()
    base = ["train", "--preset", "demo", "--model", "tcresnet8-causal", "--data", str(tiny_prepared), "--epochs", "1",
            "--threads", "1", "--no-progress"]
    r = runner.invoke(app, base + ["--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "nope" in r.output
    assert not (tmp_path / "a" / "best").exists()
    r = runner.invoke(app, base + ["--teacher", str(demo_checkpoint_path("tcresnet8-causal")), "--distill-weight", "2",
                                   "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "--distill-weight" in r.output


def test_a_teacher_of_other_clips_is_refused():
    from kwsdeploy.config import FeatureConfig

    path = demo_checkpoint_path("tcresnet8-causal")
    labels = load_checkpoint(path).labels
    with pytest.raises(ValueError, match="hears 16000-sample clips at 16000 Hz, the student 8000 at 16000 Hz"):
        Teacher(path, labels, torch.device("cpu"), FeatureConfig(clip_samples=8000))
    assert Teacher(path, labels, torch.device("cpu"), FeatureConfig()).clip_samples == 16000


def test_distillation_options_without_a_teacher_and_a_resume_that_changes_it_are_refused(tmp_path):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app
    from kwsdeploy.train.presets import TrainConfig

    runner = CliRunner()
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "a"), "--distill-weight", "0.3", "--threads", "1"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "--distill-weight shape the soft targets of a --teacher" in r.output and not (tmp_path / "a").exists()
    run = tmp_path / "run"
    run.mkdir()
    teacher = str(demo_checkpoint_path("tcresnet8-causal"))
    saved = TrainConfig(model="tcresnet8-causal", teacher=teacher).to_dict()
    (run / "config.json").write_text(json.dumps(saved))
    other = str(demo_checkpoint_path("kwm-causal-64-4"))
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--teacher", other, "--threads", "1"])
    assert r.exit_code == 2 and f"--teacher {other} (the run has {teacher})" in r.output
    from kwsdeploy.cli.train import _check_resume

    _check_resume(run, {"teacher": teacher, "distill_weight": 0.5})  # the same teacher and weight: no refusal
    saved.pop("teacher")  # a run from before --teacher: it had none
    (run / "config.json").write_text(json.dumps(saved))
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--teacher", other, "--threads", "1"])
    assert r.exit_code == 2 and f"--teacher {other} (the run has None)" in r.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


class _FixedTeacher:
    """A stand-in member whose logits do not depend on the waveform."""

    def __init__(self, logits, name):
        self._logits, self.name = torch.as_tensor(logits, dtype=torch.float32), name

    def logits(self, wave):
        return self._logits.expand(wave.shape[0], -1)


def test_an_ensembles_soft_target_is_the_mean_of_its_members_softened_distributions():
    a, b = np.array([[2.0, 0.0, -1.0]]), np.array([[-1.0, 3.0, 0.5]])
    temp = 2.0
    ens = TeacherEnsemble([_FixedTeacher(a, "a"), _FixedTeacher(b, "b")], temp)
    got = ens.logits(torch.zeros(4, 100))
    assert got.shape == (4, 3) and ens.name == "a + b"
    want = (_softmax(a, temp) + _softmax(b, temp)) / 2
    np.testing.assert_allclose(torch.softmax(got / temp, -1)[0].numpy(), want[0], rtol=1e-5)
    # not the mean of the members' logits (that would be a geometric mean of their distributions)
    assert not np.allclose(got[0].numpy(), (a + b)[0] / 2, atol=1e-2)
    with pytest.raises(ValueError, match="at least two"):
        TeacherEnsemble([_FixedTeacher(a, "a")], temp)


def test_teacher_specs_one_path_several_or_none():
    path = str(demo_checkpoint_path("tcresnet8-causal"))
    labels = load_checkpoint(path).labels
    assert teacher_paths(None) == [] and teacher_paths(path) == [path] and teacher_paths((path, "x")) == [path, "x"]
    assert load_teacher(None, labels, torch.device("cpu")) is None
    assert isinstance(load_teacher(path, labels, torch.device("cpu")), Teacher)
    ens = load_teacher((path, str(demo_checkpoint_path("convmixer"))), labels, torch.device("cpu"), temperature=3.0)
    assert isinstance(ens, TeacherEnsemble) and len(ens.members) == 2 and ens.temperature == 3.0


def test_a_config_keeps_one_teacher_as_a_path_and_several_as_a_tuple():
    from kwsdeploy.train.presets import TrainConfig

    assert TrainConfig(teacher=["a"]).teacher == "a"
    assert TrainConfig(teacher=[]).teacher is None
    cfg = TrainConfig(teacher=["a", "b"])
    assert cfg.teacher == ("a", "b")
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # a JSON list comes back a tuple
    assert back.teacher == ("a", "b") and back == cfg


def test_cli_repeated_teacher_is_an_ensemble_in_the_config_and_a_resume_checks_every_member(tiny_prepared, tmp_path):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app
    from kwsdeploy.cli.train import _check_resume
    from kwsdeploy.cli.common import UserError

    runner = CliRunner()
    t1, t2 = str(demo_checkpoint_path("tcresnet8-causal")), str(demo_checkpoint_path("convmixer"))
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--preset", "demo", "--model", "tcresnet8-causal", "--data", str(tiny_prepared),
                            "--epochs", "1", "--threads", "1", "--no-progress", "--teacher", t1, "--teacher", t2,
                            "--stop-after", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["teacher"] == [t1, t2]
    _check_resume(out, {"teacher": (t1, t2)})  # the same members: no refusal
    for other in ((t2, t1), t1):  # another order, or one member fewer: refused
        with pytest.raises(UserError, match="--teacher"):
            _check_resume(out, {"teacher": other})
