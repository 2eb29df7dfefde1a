"""The per-epoch log line, and a disabled progress bar that draws nothing."""

from kwsdeploy.train.progress import EpochBar, epoch_line

ROW = {"epoch": 3, "train_loss": 0.123456, "train_acc": 0.5, "clips_per_s": 812.4, "epoch_time_s": 2.04}


def test_epoch_line():
    assert epoch_line(ROW, 10) == "epoch 3/10: loss 0.1235, train acc 50.00%, 812 clips/s, 2.0 s"
    row = dict(ROW, valid_acc=0.25, valid_macro_f1=0.2)
    assert epoch_line(row, 10).endswith("2.0 s; valid acc 25.00%, macro F1 0.2000")


def test_a_disabled_bar_draws_nothing(capsys):
    with EpochBar(False, "epoch 1/1", 3) as bar:
        for _ in range(3):
            bar.advance("loss 1.0")
    assert bar._progress is None and capsys.readouterr() == ("", "")
