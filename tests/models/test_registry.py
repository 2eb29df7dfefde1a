"""Every registry card, generated from the registry itself: parameter counts, shapes, class counts,
determinism, finite outputs, name look-ups and suggestions. Nothing here lists models by hand."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.models import count_params, create, get_card, list_cards
from kwsdeploy.models.registry import STREAMING_MODES, UnknownModelError, kws_info, normalize

CARDS = list_cards()
IDS = [c.name for c in CARDS]
# Above this size a forward costs seconds on CPU (plain-torch selective scan): batch 1 only.
HEAVY_PARAMS = 1_500_000


def _heavy(card) -> bool:
    return (card.expected_params or 0) > HEAVY_PARAMS


def _features(batch: int, n_mfcc: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, n_mfcc, 98, generator=torch.Generator().manual_seed(seed))


def test_registry_is_not_empty_and_names_are_unique():
    assert len(CARDS) >= 3
    keys = [normalize(c.name) for c in CARDS]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_card_is_complete(card):
    assert card.expected_params, f"{card.name} has no expected parameter count"
    assert card.streaming in STREAMING_MODES
    assert card.reference and card.description
    if card.streaming == "windowed":
        assert card.notes, f"{card.name} streams windowed: its notes must say why"
    assert get_card(card.name) is card
    for alias in card.aliases:
        assert get_card(alias) is card


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_parameter_count_at_12_classes_and_card_input_width(card):
    torch.manual_seed(0)
    model = card.build(num_classes=12)
    assert count_params(model) == card.expected_params
    kws = kws_info(model)
    assert (kws.card, kws.family, kws.name, kws.num_classes, kws.n_mfcc) == (
        card, card.family, card.name, 12, card.n_mfcc
    )
    if card.n_mfcc != 40:  # the reference's own input width must run too
        with torch.no_grad():
            assert model.eval()(_features(1, card.n_mfcc)).shape == (1, 12)


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_create_at_40_mfcc_gives_finite_logits_of_shape_batch_by_classes(card):
    torch.manual_seed(0)
    model = create(card.name).eval()  # create() defaults to 40 MFCC for every card
    assert kws_info(model).n_mfcc == 40
    batches = (1,) if _heavy(card) else (1, 2)
    with torch.no_grad():
        for b in batches:
            y = model(_features(b))
            assert y.shape == (b, 12)
            assert torch.isfinite(y).all()
        if 2 in batches:  # batch 1 of the first clip equals the first row of batch 2
            y1, y2 = model(_features(1)), model(_features(2))
            assert (y1[0] - y2[0]).abs().max().item() < 1e-4


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_other_class_counts(card):
    counts = {}
    for classes in (10, 30, 35):
        torch.manual_seed(0)
        model = create(card.name, num_classes=classes)
        counts[classes] = count_params(model)
        assert kws_info(model).num_classes == classes
        if not _heavy(card) and classes == 35:
            with torch.no_grad():
                assert model.eval()(_features(1)).shape == (1, 35)
    # Only the classifier depends on the class count: parameters are affine in it.
    assert (counts[30] - counts[10]) * 5 == (counts[35] - counts[30]) * 20
    assert counts[35] > counts[30] > counts[10]


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_same_seed_same_model_and_logits(card):
    models = []
    for _ in range(2):
        torch.manual_seed(1234)
        models.append(create(card.name).eval())
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if not _heavy(card):
        with torch.no_grad():
            assert torch.equal(models[0](_features(1)), models[1](_features(1)))
    torch.manual_seed(4321)
    other = create(card.name).state_dict()
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point() and a[k].numel() > 1)


def test_bad_class_count_is_refused():
    with pytest.raises(ValueError, match="num_classes"):
        create(CARDS[0].name, num_classes=0)


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_lookups_ignore_case_dashes_and_underscores(card):
    for spelling in (card.name.upper(), card.name.replace("-", "_"), card.name.replace("-", ""),
                     card.name.title().replace("-", "_-")):
        assert get_card(spelling) is card


@pytest.mark.parametrize("card", CARDS, ids=IDS)
def test_a_typo_suggests_the_intended_name(card):
    typo = card.name + "q"
    with pytest.raises(UnknownModelError) as err:
        get_card(typo)
    msg = str(err.value)
    assert msg.startswith(f"Unknown model {typo!r}. Did you mean ")
    assert msg.endswith("Run 'kwsdeploy models' for the list.")
    suggested = msg.split("Did you mean ")[1].split("?")[0].strip("'")
    assert get_card(suggested) is card


@pytest.mark.parametrize(
    "typo, nearest", [("tcresnet9", "tcresnet8"), ("kmw", "kwm"), ("TC-ResNet8", None)]
)
def test_known_examples(typo, nearest):
    registered = {normalize(c.name) for c in CARDS} | {normalize(a) for c in CARDS for a in c.aliases}
    target = nearest or typo
    if normalize(target) not in registered:
        pytest.skip(f"{target} is not registered")
    if nearest is None:
        assert get_card(typo).name == "tcresnet8"
        return
    with pytest.raises(UnknownModelError, match=f"Did you mean '{nearest}'"):
        get_card(typo)


def test_unrelated_name_gets_no_suggestion():
    with pytest.raises(UnknownModelError) as err:
        get_card("zzzzzzzzzzzz")
    assert "Did you mean" not in str(err.value)


def test_a_built_model_carries_one_frozen_card_and_a_plain_module_none():
    import copy
    import dataclasses

    from kwsdeploy.models.registry import NotAKwsModelError, display_name

    model = create("tcresnet8", num_classes=5, causal=True)
    kws = kws_info(model)
    assert kws.overrides == {"causal": True} and kws.card is get_card("tcresnet8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        kws.num_classes = 3
    assert not any(hasattr(model, a) for a in ("model_name", "family", "num_classes", "n_mfcc"))
    assert kws_info(copy.deepcopy(model)) is kws
    with pytest.raises(NotAKwsModelError, match=r"^Linear has no kwsdeploy card \(model.kws\); build it with"):
        kws_info(torch.nn.Linear(2, 2))
    assert display_name(torch.nn.Linear(2, 2)) == "Linear" and display_name(model) == "tcresnet8"
