"""Training on several ranks (torchrun, gloo, 2 CPU processes): the global batch of one process gives
its weights, validation equals one process's exactly, only rank 0 writes, resume across world sizes.

The model is a tiny KWT (LayerNorm, no BatchNorm, no dropout): per-rank BatchNorm statistics would
differ from the global batch's by construction (on CUDA the trainer uses SyncBatchNorm instead).
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kwsdeploy.tolerances import DDP_WEIGHT_ATOL
from kwsdeploy.train.checkpoint import load_checkpoint
from kwsdeploy.train.distributed import default_micro_batch, plan_epoch, shard_batches, train_loader
from kwsdeploy.train.evaluate import evaluate_dataset
from kwsdeploy.train.launch import strip_option, torchrun_command
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.throughput import TIMING_KEYS
from kwsdeploy.train.run import train

ROOT = Path(__file__).resolve().parents[2]
TINY_KWT = {"depth": 1, "dim": 16, "mlp_dim": 32, "dim_head": 16, "emb_dropout": 0.0}
# 22 training clips in global batches of 7 (the lone 22nd clip is dropped): with 2 ranks and
# micro-batches of 1, each step is 4 passes per rank, rank 1's last one a weight-0 stand-in.
CFG = TrainConfig(model="kwt-1", model_config=TINY_KWT, epochs=3, batch_size=7, lr=1e-2, min_lr=1e-4,
                  warmup_epochs=0, weight_decay=0.01, augment=True, spec_augment=True, device="cpu", seed=4,
                  threads=1, eval_batch_size=4)
CLI_ARGS = ["--model", "kwt-1", "--model-config", json.dumps(TINY_KWT), "--epochs", "3", "--batch-size", "7",
            "--lr", "1e-2", "--min-lr", "1e-4", "--warmup-epochs", "0", "--weight-decay", "0.01", "--augment",
            "--spec-augment", "--device", "cpu", "--seed", "4", "--threads", "1", "--eval-batch-size", "4",
            "--micro-batch", "1", "--no-progress"]


# -- pure planning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world,micro", [(7, 2, 1), (128, 3, 43), (128, 3, 10), (5, 8, 16), (64, 4, 16)])
def test_each_global_batch_is_split_into_disjoint_covering_shards(n, world, micro):
    batch = list(range(100, 100 + n))
    plans = [plan_epoch([batch], r, world, micro)[0] for r in range(world)]
    assert len({len(p.micro) for p in plans}) == 1  # every rank makes the same number of passes
    real = [i for p in plans for mb in p.micro if mb.real for i in mb.indices]
    assert sorted(real) == batch  # every clip exactly once
    assert all(len(mb.indices) <= micro for p in plans for mb in p.micro)
    # DDP averages over ranks: the scales sum to the world size, so the gradient is the batch mean
    assert sum(mb.loss_scale for p in plans for mb in p.micro) == pytest.approx(world, abs=1e-12)
    assert all(mb.loss_scale == world * mb.real / n for p in plans for mb in p.micro)  # 0 for a stand-in


def test_one_rank_one_pass_per_batch_is_the_single_process_loop():
    plan = plan_epoch([[3, 1, 2], [0, 4]], 0, 1, default_micro_batch(3, 1))
    assert [[(mb.indices, mb.positions, mb.real, mb.loss_scale) for mb in s.micro] for s in plan] == [
        [([3, 1, 2], [0, 1, 2], 3, 1.0)], [([0, 4], [0, 1], 2, 1.0)]]


def test_validation_batches_are_dealt_to_ranks_once_each():
    assert [shard_batches(5, r, 2) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert shard_batches(1, 1, 2) == []


def test_nproc_relaunches_the_same_command_under_torchrun():
    cmd = torchrun_command(2, ["train", "--out", "r", "--nproc", "2", "--nproc=2", "--epochs", "1"])
    assert cmd[1:] == ["-m", "kwsdeploy.train.launch", "--standalone", "--nproc-per-node=2", "-m", "kwsdeploy",
                       "train", "--out", "r", "--epochs", "1"]
    assert torchrun_command(2, ["--debug", "train", "--nproc", "2"])[1:3] == ["-m", "torch.distributed.run"]
    assert strip_option(["--nprocx", "3"], "--nproc") == ["--nprocx", "3"]


# -- data ------------------------------------------------------------------------------------------
def test_augmented_batches_do_not_depend_on_the_worker_count(tiny_prepared):
    from kwsdeploy.data.dataset import KwsDataset

    ds = KwsDataset(tiny_prepared, "train", augment=True, seed=2, gain_db=6.0, noise_snr_db=(5, 20))
    batches = [list(range(0, 8)), list(range(8, 16))]
    plan = plan_epoch(batches, 1, 2, 2)  # rank 1 of 2: rows 1, 3, 5, 7 of each batch, two per pass

    def epoch(e, workers):
        ds.set_epoch(e)
        return [(w.clone(), t.clone()) for w, t in train_loader(ds, plan, num_workers=workers)]

    one, two = epoch(1, 0), epoch(1, 2)
    assert len(one) == 4 and [t.tolist() for _, t in one] == [[ds.targets[i] for i in mb.indices]
                                                              for s in plan for mb in s.micro]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one, two))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(one, epoch(2, 2)))  # another epoch, other draws


def test_a_disk_cache_reaches_spawned_workers_as_a_mapping(tiny_prepared, tmp_path):
    from kwsdeploy.data.dataset import KwsDataset

    prepared = tmp_path / "p"
    shutil.copytree(tiny_prepared, prepared)
    ds = KwsDataset(prepared, "valid", cache="disk")
    copy = pickle.loads(pickle.dumps(ds))
    assert isinstance(ds.clips, np.memmap) and isinstance(copy.clips, np.memmap)
    assert len(pickle.dumps(ds)) < ds.clips.nbytes  # the path travels, not the clips
    assert np.array_equal(copy.clips, ds.clips) and torch.equal(copy[3][0], ds[3][0])


# -- two ranks -------------------------------------------------------------------------------------
def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(run):
    return load_file(str(run / "last" / "model.safetensors"))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tiny_prepared, tmp_path_factory):
    """One process: the full run, and copies stopped after 1 and 2 epochs."""
    root = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, stop in (("full", None), ("cut1", 1), ("cut2", 2)):
            train(CFG, tiny_prepared, root / name, progress=False,
                  stop_after=stop, test=False)
    finally:
        torch.set_num_threads(threads)
    return root


def test_two_ranks_match_one_process_and_only_rank_0_writes(single, tiny_prepared, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "kwsdeploy", "train", "--out", str(run), "--data", str(tiny_prepared), *CLI_ARGS,
           "--stop-after", "2", "--nproc", "2"]
    proc = _run(cmd, tmp_path)
    ref = single / "cut2"
    diff = _max_diff(_weights(ref), _weights(run))
    assert diff <= DDP_WEIGHT_ATOL, diff
    moved = _max_diff(_weights(ref), _weights(single / "cut1"))
    assert moved > 100 * DDP_WEIGHT_ATOL, moved  # the weights did move: the comparison means something
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2] and {r["world_size"] for r in rows} == {2}
    assert all(len(r["clips_per_s_per_rank"]) == 2 and 0 <= r["data_wait_share"] < 1 for r in rows)
    assert [r["lr"] for r in rows] == [r["lr"] for r in _rows(ref)]  # the schedule steps per global batch
    assert proc.stderr.count("epoch 2/3:") == 1 and proc.stderr.count("throughput over 2 epoch(s), 2 rank(s)") == 1
    names = {p.name for p in run.iterdir()} - {"curves.png", "test_confusion.png"}  # (plots: with matplotlib)
    assert names == {"best", "last", "config.json", "metrics.jsonl", "test_metrics.json"}  # no stray files
    tm = json.loads((run / "test_metrics.json").read_text())  # the test split, evaluated on 2 ranks
    assert tm["n"] == 11 and np.array(tm["confusion"]).sum() == 11
    card = json.loads((run / "last" / "card.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["micro_batch"] == 1
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode == 2, again.stderr[-3000:]  # bad input: exit 2,
    assert "already holds a run; pass --resume" in again.stderr
    assert "Traceback" not in again.stderr and _rows(run) == rows  # no traceback, nothing touched

    # Validation over the whole split, 3 batches dealt to 2 ranks, equals one process exactly.
    last = load_checkpoint(run / "last")
    from kwsdeploy.data.dataset import KwsDataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vm = evaluate_dataset(last.model, last.feature_config, KwsDataset(tiny_prepared, "valid"), last.labels, 4)
    finally:
        torch.set_num_threads(threads)
    assert vm["n"] == 11
    assert (rows[-1]["valid_loss"], rows[-1]["valid_acc"], rows[-1]["valid_macro_f1"]) == (
        vm["loss"], vm["accuracy"], vm["macro_f1"])

    # Killed after 2 epochs on 2 ranks, resumed on 1: continues at step 6 and lands on the 1-process run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(CFG, tiny_prepared, run, resume=True, progress=False, test=False)
    finally:
        torch.set_num_threads(threads)
    assert _max_diff(_weights(single / "full"), _weights(run)) <= DDP_WEIGHT_ATOL
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3] and _rows(run)[-1]["world_size"] == 1


def test_a_one_process_run_resumes_on_two_ranks(single, tiny_prepared, tmp_path):
    run = tmp_path / "cut1"
    shutil.copytree(single / "cut1", run)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "kwsdeploy",
          "train", "--out", str(run), "--data", str(tiny_prepared), "--resume", "--device", "cpu", "--threads", "1",
          "--micro-batch", "1", "--no-progress"], tmp_path)
    full = single / "full"
    assert _max_diff(_weights(full), _weights(run)) <= DDP_WEIGHT_ATOL
    state = lambda r: json.loads((r / "last" / "train_state.json").read_text())["scheduler"]  # noqa: E731
    assert state(run) == state(full) == {"step_count": 9}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS + ("world_size",)}  # noqa: E731
                          for r in rows]
    assert strip(_rows(run))[0] == strip(_rows(full))[0]  # the first epoch is the one-process one
    assert [r["world_size"] for r in _rows(run)] == [1, 2, 2]


def test_loader_workers_do_not_change_the_trained_weights(single, tiny_prepared, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(CFG.with_overrides(num_workers=2), tiny_prepared, tmp_path / "w2", progress=False, stop_after=1,
              test=False)
    finally:
        torch.set_num_threads(threads)
    a, b = _weights(single / "cut1"), _weights(tmp_path / "w2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nproc_under_torchrun_is_a_one_line_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from kwsdeploy.cli.main import app

    monkeypatch.setenv("LOCAL_RANK", "0")
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--nproc", "2"])
    assert r.exit_code == 2 and "under torchrun leave it out" in r.output and not (tmp_path / "r").exists()
