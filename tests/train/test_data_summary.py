"""The card's account of the training data: directory, labels, split sizes and the corpus."""

from kwsdeploy.train.data_summary import data_summary


def test_summary_of_a_prepared_directory(tiny_prepared):
    s = data_summary(tiny_prepared, ["a", "b"], 22, 11)
    assert s == {"dir": "prepared", "labels": ["a", "b"], "train_clips": 22, "valid_clips": 11, "corpus": "fsdd_demo"}
    assert data_summary(tiny_prepared.parent, [], 0, 0) == {"dir": tiny_prepared.parent.name, "labels": [],
                                                             "train_clips": 0, "valid_clips": 0}
