"""`kwsdeploy stream` / `eval-stream` with the shipped demo checkpoint on real speech: the torch step
form and the exported ONNX bundle hear the same keywords, at the times the words are spoken."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kwsdeploy.audio import save_wav_atomic
from kwsdeploy.cli.main import app
from kwsdeploy.cli.stream import REFRACTORY_S, SMOOTHING_S, THRESHOLD, BundleSource, TorchSource, detect
from kwsdeploy.data.dataset import KwsDataset
from kwsdeploy.data.demo import demo_corpus_dir
from kwsdeploy.data.prepared import load_labels
from kwsdeploy.streaming.stream_eval import build_long_recording, score_detections
from kwsdeploy.tolerances import LONG_STREAM_PARITY_ATOL
from kwsdeploy.train.checkpoint import demo_checkpoint_path, load_checkpoint

MODEL = "tcresnet8-causal"
runner = CliRunner()


@pytest.fixture(scope="module")
def sequence():
    """Ten test clips (unseen speaker) the offline demo model classifies confidently and rightly,
    joined by noise gaps: (audio, events)."""
    corpus = demo_corpus_dir()
    ds, labels = KwsDataset(corpus, "test"), load_labels(corpus)
    ck = load_checkpoint(demo_checkpoint_path(MODEL))
    from kwsdeploy.features import MFCC

    mfcc = MFCC(ck.feature_config)
    picked = []
    for i in range(len(ds)):
        wave, y = ds[i]
        if labels[y] == "_silence_":
            continue
        with torch.no_grad():
            p = torch.softmax(ck.model(mfcc(wave[None]).unsqueeze(1)), -1)[0]
        if int(p.argmax()) == y and float(p.max()) > 0.9:
            picked.append((np.asarray(wave, dtype=np.float32), labels[y]))
        if len(picked) == 10:
            break
    assert len(picked) == 10
    noise = 0.02 * np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32)
    return build_long_recording(picked, noise=noise, gap_seconds=(1.0, 1.5), noise_gain=0.02, seed=1)


@pytest.fixture(scope="module")
def bundle(tcresnet8_frontend_bundle):
    assert MODEL == "tcresnet8-causal"  # the shared fixture's model
    return tcresnet8_frontend_bundle


def test_torch_step_form_hears_confident_keywords_where_they_are(sequence):
    audio, events = sequence
    src = TorchSource(None, MODEL, None, None)
    found = detect(src, audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)
    score = score_detections([(e.label, e.time) for e in found], events, len(audio) / 16000)
    assert score.keyword_events == 10
    # Every clip here is one the offline model gets right with p > 0.9: the stream must hear most.
    assert score.accuracy >= 0.8, score
    assert score.false_alarms <= 2, score


def test_bundle_through_onnxruntime_gives_the_torch_detections(sequence, bundle):
    audio, _ = sequence
    torch_src = TorchSource(None, MODEL, None, None)
    ort_src = BundleSource(bundle)
    lt, lo = torch_src.logits(audio), ort_src.logits(audio)
    assert lt.shape == lo.shape and np.abs(lt - lo).max() <= 1e-4
    d_t = [(e.label, e.time) for e in detect(torch_src, audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)]
    d_o = [(e.label, e.time) for e in detect(ort_src, audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)]
    assert d_t == d_o and len(d_t) >= 8


def test_stream_cli_json_lists_events_with_times(sequence, bundle, tmp_path):
    audio, events = sequence
    wav = save_wav_atomic(tmp_path / "seq.wav", audio, 16000)
    r = runner.invoke(app, ["stream", "--bundle", str(bundle), str(wav), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["seconds"] == pytest.approx(len(audio) / 16000, abs=1e-3)
    times = [d["time"] for d in out["detections"]]
    assert times == sorted(times) and len(times) >= 8
    first = events[0]
    assert first.start <= times[0] <= first.end + 1.0


def test_stream_cli_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["stream", str(tmp_path / "missing.wav"), "--model", MODEL])
    assert r.exit_code == 2 and "missing.wav" in r.output and r.output.count("\n") <= 2
    r = runner.invoke(app, ["stream", str(tmp_path / "x.wav")])
    assert r.exit_code == 2 and "--checkpoint" in r.output


def test_eval_stream_compares_step_and_windowed(tmp_path):
    r = runner.invoke(app, ["eval-stream", "--model", MODEL, "--clips", "12", "--modes", "exact,windowed", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [("exact" in x["source"], "windowed" in x["source"]) for x in rows] == [(True, False), (False, True)]
    for x in rows:
        assert x["keyword_events"] + 0 <= 12 and 0.0 <= x["accuracy"] <= 1.0 and x["hours"] > 0
        assert x["detected"] + x["missed"] == x["keyword_events"]


def test_larger_packets_hear_the_same_keywords(sequence):
    """16-frame packets (two natural TC-ResNet packets per call): half the calls, same events up to
    one packet of timing."""
    audio, _ = sequence
    d8 = detect(TorchSource(None, MODEL, None, None), audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)
    d16 = detect(TorchSource(None, MODEL, None, 16), audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)
    assert [e.label for e in d8] == [e.label for e in d16]
    assert max(abs(a.time - b.time) for a, b in zip(d8, d16)) <= 0.16 + 1e-9


def test_a_bundle_refuses_a_mode_or_packet_it_was_not_exported_with(bundle, sequence, tmp_path):
    wav = save_wav_atomic(tmp_path / "seq.wav", sequence[0][:16000], 16000)
    for extra, says in ((["--mode", "windowed"], "streams in exact mode (fixed at export)"),
                        (["--packet-frames", "7"], "exported with 8 (fixed at export)"),
                        (["--model", MODEL], "--bundle and --model name different sources")):
        r = runner.invoke(app, ["stream", "--bundle", str(bundle), str(wav), *extra])
        assert r.exit_code == 2 and says in r.output, r.output
    r = runner.invoke(app, ["eval-stream", "--bundle", str(bundle), "--modes", "windowed"])
    assert r.exit_code == 2 and "drop --modes" in r.output
    r = runner.invoke(app, ["stream", "--bundle", str(bundle), str(wav), "--mode", "exact", "--json"])
    assert r.exit_code == 0, r.output  # the bundle's own settings are no contradiction


def _blocks(x, seed=0):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 5000))
        yield x[i:i + n]
        i += n


def test_feeding_blocks_of_any_size_gives_the_whole_recordings_logits(sequence, bundle):
    audio = sequence[0][: 16000 * 8]
    for src in (TorchSource(None, MODEL, None, None), BundleSource(bundle, "onnxruntime")):
        whole = src.logits(audio)
        feeder = src.feeder()
        parts = np.concatenate([feeder.feed(b) for b in _blocks(audio)])
        assert parts.shape == whole.shape and float(np.abs(parts - whole).max()) == 0.0


def test_a_features_bundle_fed_in_blocks_matches_the_offline_frontend(sequence, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "b"
    assert runner.invoke(app, ["export", "--model", MODEL, "--out", str(out), "--exporter", "legacy"]).exit_code == 0
    src = BundleSource(out, "onnxruntime")
    audio = sequence[0][: 16000 * 6]
    whole = src.logits(audio)  # offline MFCC of [zero cache + audio]
    feeder = src.feeder()
    parts = np.concatenate([feeder.feed(b) for b in _blocks(audio, 1)])
    assert parts.shape == whole.shape and float(np.abs(parts - whole).max()) <= 1e-4


def test_a_long_file_streams_with_flat_memory(bundle, tmp_path):
    import tracemalloc

    from kwsdeploy.audio import read_blocks
    from kwsdeploy.cli.stream import detect_blocks

    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(16000 * 180)).astype(np.float32)  # 3 minutes: 11.5 MB as float32
    wav = save_wav_atomic(tmp_path / "long.wav", x, 16000)
    src = BundleSource(bundle, "onnxruntime")
    tracemalloc.start()
    reader = read_blocks(wav, 16000)
    events = list(detect_blocks(src, reader, THRESHOLD, SMOOTHING_S, REFRACTORY_S))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert reader.samples == len(x) and isinstance(events, list)
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for an 11.5 MB recording"


def test_stream_dash_reads_raw_pcm_from_stdin_and_says_events_as_they_fire(sequence, bundle):
    audio, events = sequence
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    r = runner.invoke(app, ["stream", "--bundle", str(bundle), "-", "--json"], input=pcm)
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert len(lines) >= 8 and lines[0]["time"] >= events[0].start
    whole = runner.invoke(app, ["stream", "--bundle", str(bundle), str(save_wav_atomic(
        Path(str(bundle) + "-seq.wav"), audio, 16000)), "--json"])
    assert [d["label"] for d in json.loads(whole.output)["detections"]] == [d["label"] for d in lines]


def test_nan_samples_become_silence_and_a_nan_packet_never_reaches_the_state(sequence, bundle, tmp_path):
    import soundfile as sf

    from kwsdeploy.runtime.base import PacketError
    from kwsdeploy.runtime.runners import open_runner

    x = sequence[0][: 16000 * 4].copy()
    x[20000:20100] = np.nan
    wav = tmp_path / "nan.wav"
    sf.write(str(wav), x, 16000, subtype="FLOAT")
    r = runner.invoke(app, ["stream", "--bundle", str(bundle), str(wav), "--json"])
    assert r.exit_code == 0, r.output
    assert "100 NaN or infinite samples were replaced by silence" in json.loads(r.output)["notes"]
    run = open_runner(bundle)
    good = np.zeros(run.packet_shape, dtype=np.float32)
    before = run.state()
    with pytest.raises(PacketError, match="NaN or infinity"):
        run.step(np.full(run.packet_shape, np.nan, dtype=np.float32))
    after = run.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert np.isfinite(run.step(good)).all()


def test_two_minutes_without_a_reset_stay_finite_bounded_and_torch_and_ort_agree(bundle):
    from kwsdeploy.cli.stream import detect_blocks
    from kwsdeploy.runtime.runners import open_runner
    from kwsdeploy.streaming.blocks import RunnerFeeder

    corpus = demo_corpus_dir()
    ds, labels = KwsDataset(corpus, "test"), load_labels(corpus)
    pairs = [(np.asarray(ds[i][0], dtype=np.float32), labels[int(ds[i][1])]) for i in range(0, len(ds), 2)][:48]
    noise = np.random.default_rng(3).standard_normal(16000 * 4).astype(np.float32)
    audio, events = build_long_recording(pairs, noise=noise, gap_seconds=(1.0, 1.5), noise_gain=0.02, seed=3)
    assert len(audio) >= 16000 * 100
    blocks = [audio[i:i + 160000] for i in range(0, len(audio), 160000)]
    src = TorchSource(None, MODEL, None, None)
    tf = src.feeder()
    runner = open_runner(bundle)
    rf = RunnerFeeder(runner)
    maxima = {"torch": [], "ort": []}
    lt, lo = [], []
    for b in blocks:
        lt.append(tf.feed(b))
        lo.append(rf.feed(b))
        maxima["torch"].append(max(float(s.abs().max()) for s in tf.pipe.state))
        maxima["ort"].append(max(float(np.abs(s).max()) for s in runner.state().values()))
    lt, lo = np.concatenate(lt), np.concatenate(lo)
    assert np.isfinite(lt).all() and np.isfinite(lo).all() and float(np.abs(lt - lo).max()) <= LONG_STREAM_PARITY_ATOL
    for m in maxima.values():
        half = len(m) // 2
        assert np.isfinite(m).all() and max(m[half:]) <= 2.0 * max(m[:half])  # bounded, not growing
    d_t = list(detect_blocks(src, blocks))
    d_o = list(detect_blocks(BundleSource(bundle, "onnxruntime"), blocks))
    assert [(e.label, e.time) for e in d_t] == [(e.label, e.time) for e in d_o] and len(d_t) >= 20
    # no drift, no hidden long-term state: a stream restarted half-way converges to the uninterrupted
    # one within its receptive field (under 4 s here; TC-ResNet's convs see beyond its 1 s window) and
    # then gives the same logits to the end
    half = len(blocks) // 2
    offset = half * 160000 // src.spec.packet_samples
    restarted = src.feeder()
    lr = np.concatenate([restarted.feed(b) for b in blocks[half:]])
    w = int(np.ceil(4.0 / src.hop_seconds))
    assert len(lr) > 10 * w and float(np.abs(lr[w:] - lt[offset + w:offset + len(lr)]).max()) <= 1e-4
