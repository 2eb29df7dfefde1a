"""The best epoch: the first with the highest validation accuracy (training accuracy without one)."""

from kwsdeploy.train.best import Best, epoch_score


def test_the_first_epoch_of_the_maximum_is_best():
    best = Best()
    taken = [best.offer(score, epoch) for epoch, score in enumerate([0.5, 0.7, 0.7, 0.6, 0.71], start=1)]
    assert taken == [True, True, False, False, True] and (best.acc, best.epoch) == (0.71, 5)
    best = Best()
    assert best.offer(0.0, 1) and (best.acc, best.epoch) == (0.0, 1)  # the first epoch is always taken


def test_score_and_counters():
    assert epoch_score({"train_acc": 0.9, "valid_acc": 0.4}) == 0.4 and epoch_score({"train_acc": 0.9}) == 0.9
    best = Best(0.6, 2)
    assert best.counters(next_epoch=4) == {"next_epoch": 4, "best_acc": 0.6, "best_epoch": 2}
    assert Best.from_counters(best.counters(4)) == best
