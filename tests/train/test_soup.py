"""Model soups: the mean of the ingredients' tensors, greedy selection, refusals, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from kwsdeploy.cli.main import app
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint, save_checkpoint
from kwsdeploy.train.soup import SoupError, average_state_dicts, check_ingredients, greedy_soup

MODEL = "tcresnet8-causal"


def _perturbed(tmp_path, name: str, scale: float, seed: int):
    """The shipped checkpoint with N(0, scale) added to every float tensor, saved as `name`."""
    ck = load_checkpoint(demo_checkpoint_path(MODEL))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in ck.model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * scale)
    return save_checkpoint(tmp_path / name, ck.model, ck.labels, ck.feature_config,
                           model_config=ck.card.get("model_config") or {}, training=ck.card["training"])


def test_average_is_the_mean_and_integers_take_the_max():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    out = average_state_dicts([a, b])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]), rtol=0, atol=0)
    assert out["n"].item() == 7 and out["n"].dtype == a["n"].dtype
    with pytest.raises(SoupError, match="shapes"):
        average_state_dicts([a, {"w": torch.zeros(3), "n": torch.tensor(1)}])
    with pytest.raises(SoupError, match="names"):
        average_state_dicts([a, {"v": torch.zeros(2), "n": torch.tensor(1)}])


def test_greedy_keeps_what_helps_and_drops_what_hurts():
    target = torch.tensor([1.0, 1.0])
    score = lambda s: -float(torch.sum((s["w"] - target) ** 2))  # noqa: E731
    states = [{"w": torch.tensor([1.2, 0.8])}, {"w": torch.tensor([0.8, 1.2])}, {"w": torch.tensor([9.0, -9.0])}]
    r = greedy_soup(states, score)
    assert r.chosen == [0, 1]  # 0 and 1 tie on their own (0 first); their mean is the target; 2 would move it away
    assert r.trail[1]["soup_score"] == pytest.approx(0.0) and r.trail[2]["kept"] is False
    assert r.scores == pytest.approx([-0.08, -0.08, -164.0])
    assert r.score == pytest.approx(0.0)  # the soup of 0 and 1


def test_refuses_other_models_or_labels():
    card = {"model": "a", "num_classes": 2, "n_mfcc": 40, "model_config": {}, "labels": ["x", "y"], "feature_config": {}}
    check_ingredients([card, dict(card)], ["a", "b"])
    with pytest.raises(SoupError, match="labels"):
        check_ingredients([card, {**card, "labels": ["y", "x"]}], ["a", "b"])
    with pytest.raises(SoupError, match="model"):
        check_ingredients([card, {**card, "model": "b"}], ["a", "b"])
    with pytest.raises(SoupError, match="at least two"):
        check_ingredients([card], ["a"])


def test_cli_uniform_soup_is_the_mean_and_greedy_drops_a_broken_ingredient(tmp_path):
    a = _perturbed(tmp_path, "a", 1e-3, 0)
    b = _perturbed(tmp_path, "b", 1e-3, 1)
    broken = _perturbed(tmp_path, "broken", 1.0, 2)
    r = CliRunner().invoke(app, ["soup", str(a), str(b), "--out", str(tmp_path / "ab")])
    assert r.exit_code == 0, r.output
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    soup = load_checkpoint(tmp_path / "ab")
    for k, v in soup.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, ((sa[k].double() + sb[k].double()) / 2).float(), rtol=0, atol=1e-7)
    rec = soup.card["training"]["soup"]
    assert rec["method"] == "uniform" and [i["kept"] for i in rec["ingredients"]] == [True, True]
    assert "/" not in rec["ingredients"][0]["checkpoint"].split("/", 1)[1]  # folder names, no machine path

    r = CliRunner().invoke(app, ["soup", str(a), str(broken), str(b), "--greedy", "--data", str(demo_corpus_dir()),
                                 "--out", str(tmp_path / "greedy"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    scores = summary["ingredient_scores"]
    assert scores[f"{tmp_path.name}/broken"] < 0.5 < scores[f"{tmp_path.name}/a"]
    assert f"{tmp_path.name}/broken" not in summary["kept"] and summary["score"] >= max(scores.values())
    card = load_checkpoint(tmp_path / "greedy").card
    assert card["metrics"]["valid_accuracy"] == pytest.approx(summary["score"])


@pytest.mark.parametrize("extra, message", [
    (["--greedy"], "--greedy scores each soup"),
    (["--data", "D", "--split", "test"], "test speaker"),
])
def test_cli_refusals_are_one_line(tmp_path, extra, message):
    a = _perturbed(tmp_path, "a", 1e-3, 0)
    args = ["soup", str(a), str(a), "--out", str(tmp_path / "o")] + [str(demo_corpus_dir()) if x == "D" else x for x in extra]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_cli_refuses_another_model(tmp_path):
    a = _perturbed(tmp_path, "a", 1e-3, 0)
    r = CliRunner().invoke(app, ["soup", str(a), str(demo_checkpoint_path("matchboxnet-causal")), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "differs from" in r.output and len(r.output.strip().splitlines()) == 1
