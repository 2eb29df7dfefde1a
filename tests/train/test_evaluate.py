"""Evaluation metrics on a hand-built prediction set: exact accuracy, macro F1, recall, confusion."""

import math

import numpy as np
import pytest

from kwsdeploy.train.evaluate import classification_metrics, confusion_matrix, format_report

LABELS = ["yes", "no", "up", "down"]
# 10 clips. yes: 3 right, 1 -> no; no: 2 right, 1 -> up; up: 2 right; down: never present, predicted once.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_confusion_matrix_exact_counts():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.tolist() == [[3, 1, 0, 0], [0, 2, 1, 0], [0, 0, 2, 1], [0, 0, 0, 0]]


def test_accuracy_macro_f1_and_recall_exact():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    # F1 per class: yes 2*3/(4+3)=6/7, no 2*2/(3+3)=2/3, up 2*2/(3+3)=2/3, down 2*0/(0+1)=0
    assert m["per_class"]["yes"]["f1"] == pytest.approx(6 / 7)
    assert m["macro_f1"] == pytest.approx((6 / 7 + 2 / 3 + 2 / 3 + 0) / 4)
    assert [m["per_class"][k]["recall"] for k in LABELS[:3]] == pytest.approx([0.75, 2 / 3, 2 / 3])
    assert m["per_class"]["down"]["recall"] is None and m["per_class"]["down"]["precision"] == 0.0
    assert m["per_class"]["no"]["precision"] == pytest.approx(2 / 3)


def test_class_absent_from_truth_and_predictions_is_left_out_of_macro_f1():
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b", "c"])
    assert m["per_class"]["c"]["f1"] is None
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_empty_and_bad_inputs():
    assert math.isnan(classification_metrics([], [], ["a"])["accuracy"])
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix([0, 5], [0, 1], 3)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix([0, 1], [0], 3)


def test_report_lists_every_label_and_the_matrix():
    text = format_report(classification_metrics(Y_TRUE, Y_PRED, LABELS))
    assert "top-1 accuracy: 70.00%" in text and "macro F1: 0.5476" in text
    assert "75.0%" in text and "n/a" in text
    assert np.array_equal(np.array([[int(v) for v in line.split()[1:]] for line in text.splitlines()[-4:]]),
                          confusion_matrix(Y_TRUE, Y_PRED, 4))


def test_confusion_and_curve_plots_are_written_when_matplotlib_is_present(tmp_path):
    pytest.importorskip("matplotlib")
    from kwsdeploy.train.evaluate import plot_confusion, plot_curves

    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    assert plot_confusion(m, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    rows = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.1}, {"epoch": 2, "train_loss": 1.0, "train_acc": 0.5}]
    assert plot_curves(rows, tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"


def test_in_model_labels_maps_data_indices_onto_a_larger_model_label_set():
    from kwsdeploy.train.evaluate import in_model_labels

    data = [(0, 0), (1, 1), (2, 2)]  # (x, y) with data labels a, b, _silence_
    mapped = in_model_labels(data, ["a", "b", "_silence_"], ["a", "b", "_unknown_", "_silence_"])
    assert [mapped[i][1] for i in range(3)] == [0, 1, 3] and len(mapped) == 3
    assert in_model_labels(data, ["a", "b"], ["a", "b"]) is data
    with pytest.raises(ValueError, match="does not know"):
        in_model_labels(data, ["a", "c"], ["a", "b"])
