"""The reference label orders and the --labels parser."""

import pytest

from kwsdeploy.labels import GSC12, GSC30, GSC35, default_order_name, reference_labels


def test_reference_orders_have_facts_lengths_and_positions():
    assert (len(GSC12), len(GSC30), len(GSC35)) == (12, 30, 35)
    assert GSC12[10:] == ("unknown", "silence")
    assert GSC30[10] == "zero" and GSC30[19] == "nine" and GSC30[-1] == "wow"
    assert GSC35[30:] == ("backward", "forward", "follow", "learn", "visual")
    assert len(set(GSC35)) == 35


def test_default_order_is_chosen_from_the_number_of_classes():
    assert [default_order_name(n) for n in (12, 30, 35, 10)] == ["gsc12", "gsc30", "gsc35", None]
    assert reference_labels(None, 35) == list(GSC35)


def test_explicit_orders_and_word_lists():
    assert reference_labels("GSC30", 30) == list(GSC30)
    assert reference_labels("a, b,c", 3) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "spec,n,match",
    [(None, 10, "no reference label order"), ("a,b", 3, "2 labels but the model has 3"),
     ("a,a,b", 3, "repeats"), ("gsc12", 30, "12 labels"), ("gsc13", 12, "neither")],
)
def test_bad_label_specs_are_refused(spec, n, match):
    with pytest.raises(ValueError, match=match):
        reference_labels(spec, n)
