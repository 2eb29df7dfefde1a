"""State-aware calibration data: tuples met while streaming real clips, independent copies, errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kwsdeploy.calibration.data import (
    CalibrationClips,
    CalibrationError,
    CalibrationSet,
    collect_calibration,
    load_calibration_clips,
    stream_inputs,
)
from tests.calibration.conftest import calibrate


def test_tuples_hold_every_input_and_are_independent_copies(tc_graph, tc_calib):
    proto, _ = tc_graph
    graph_inputs = [i.name for i in proto.graph.input]
    assert tc_calib.names == graph_inputs and tc_calib.input_name == "features"
    arrays = [a for t in tc_calib.tuples for a in t.values()]
    # no two arrays share memory: no tuple is a view of a buffer a later step overwrote
    bases = {id(a.base if a.base is not None else a) for a in arrays}
    assert len(bases) == len(arrays)
    first, later = tc_calib.tuples[0], tc_calib.tuples[-1]
    before = later["state.stem.conv"].copy()
    first["state.stem.conv"][...] = 123.0  # writing one tuple leaves every other untouched
    assert np.array_equal(later["state.stem.conv"], before)
    first["state.stem.conv"][...] = 0.0


def test_states_are_those_of_the_stream_from_zero_and_across_clip_boundaries(tc_graph, tc_calib):
    from kwsdeploy.runtime.ort import OrtStepRunner as StepSession

    proto, ck = tc_graph
    calib = tc_calib
    assert calib.stride == 1 and calib.streams == 8
    per_stream = len(calib.clips.indices) // calib.streams
    packets_per_clip = 100 // 8  # 1 s = 100 frames, tcresnet packets are 8 frames
    assert calib.steps == per_stream * 16000 // 160 // 8
    # step 0 of every stream starts from the zero state
    for r in range(calib.streams):
        assert all(not np.any(v) for k, v in calib.tuples[r].items() if k.startswith("state."))
    # the state a tuple records is the one the fp32 graph reached streaming the joined clips
    joined = calib.clips.audio[: calib.streams * per_stream].reshape(calib.streams, -1)
    x = stream_inputs(joined, "features", ck.feature_config)
    sess = StepSession(proto.SerializeToString(), batch=calib.streams, threads=1)
    t_check = packets_per_clip + 1  # a step inside the second clip: state carried over the boundary
    for t in range(t_check):
        sess.step(x[..., t * 8:(t + 1) * 8])
    state = sess.state()
    for r in range(calib.streams):
        tup = calib.tuples[t_check * calib.streams + r]
        for name, value in state.items():
            np.testing.assert_allclose(tup[name][0], value[r], atol=1e-5)
        assert np.abs(tup["state.pool.pool"]).max() > 0  # not reset at the clip boundary


def test_stride_bounds_the_tuple_count(kwm_graph):
    calib = calibrate(*kwm_graph, clips=8, max_tuples=100)
    assert len(calib) <= 100 and calib.stride == -(-calib.steps * calib.streams // 100)
    rec = calib.record()
    assert rec["clips"] == 8 and rec["data"] == "demo corpus" and rec["split"] == "train" and rec["seed"] == 0
    assert len(rec["input_ranges_sha256"]) == 64 and rec["tuples"] == len(calib)
    import hashlib  # the recorded digest keeps its format: sha256 of "name:lo:hi;..." sorted by name

    blob = ";".join(f"{k}:{lo:.9g}:{hi:.9g}" for k, (lo, hi) in sorted(calib.ranges().items()))
    assert rec["input_ranges_sha256"] == hashlib.sha256(blob.encode()).hexdigest()


def test_equal_batches_drop_only_the_remainder(tc_calib):
    sizes = [len(b["features"]) for b in tc_calib.batches(7, equal=True)]
    assert set(sizes) == {7} and sum(sizes) == len(tc_calib) - len(tc_calib) % 7


def test_zero_range_state_is_a_one_line_error():
    t = {"features": np.ones((1, 40, 1), np.float32), "state.a.b": np.zeros((1, 4), np.float32)}
    cs = CalibrationSet("features", [t, {k: v.copy() for k, v in t.items()}], 1, 2, 1)
    with pytest.raises(CalibrationError, match=r"state input 'state.a.b' has a range of zero.*--calib-clips"):
        cs.check_state_ranges()


def _wav(path, rate=16000, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)


def test_folder_clips_load_at_the_card_rate(tmp_path):
    _wav(tmp_path / "yes" / "a.wav")
    _wav(tmp_path / "no" / "b.wav")
    c = load_calibration_clips(tmp_path, ["yes", "no", "up"], 16000, 16000, clips=0)
    assert c.audio.shape == (2, 16000) and c.split == "" and sorted(c.indices) == [0, 1]


@pytest.mark.parametrize("case, match", [
    ("empty", "holds no audio files"),
    ("rate", "is at 8000 Hz but the model's card expects 16000 Hz"),
    ("label", r"label folder\(s\) \['maybe'\] that the model does not know"),
    ("missing", "is not a directory"),
])
def test_bad_calibration_folders_are_refused(tmp_path, case, match):
    if case == "empty":
        (tmp_path / "yes").mkdir()
    elif case == "rate":
        _wav(tmp_path / "yes" / "a.wav", rate=8000)
    elif case == "label":
        _wav(tmp_path / "maybe" / "a.wav")
    src = tmp_path / "nope" if case == "missing" else tmp_path
    with pytest.raises(CalibrationError, match=match):
        load_calibration_clips(src, ["yes", "no"], 16000, 16000)


def test_prepared_data_with_unknown_labels_is_refused():
    with pytest.raises(CalibrationError, match="that the model does not know"):
        load_calibration_clips(None, ["yes", "no"], 16000, 16000)


def test_prepared_data_at_another_rate_is_refused():
    from kwsdeploy.data.demo import demo_corpus_dir
    from kwsdeploy.data.prepared import load_labels

    labels = load_labels(demo_corpus_dir())
    with pytest.raises(CalibrationError, match="is at 16000 Hz but the model's card expects 8000 Hz"):
        load_calibration_clips(None, labels, 8000, 8000)


def test_no_clips_is_refused(tc_graph):
    proto, ck = tc_graph
    empty = CalibrationClips(np.zeros((0, 16000), np.float32), "x", "", (), 0)
    with pytest.raises(CalibrationError, match="no calibration clips"):
        collect_calibration(proto.SerializeToString(), empty, ck.feature_config)


def test_no_labels_means_any_words():
    """Random weights (the benchmark's rows without a checkpoint) calibrate on any corpus: labels=None
    skips the check that refuses words the model does not know, and nothing else."""
    clips = load_calibration_clips(None, None, 16000, 16000, clips=4)
    assert clips.audio.shape == (4, 16000) and np.isfinite(clips.audio).all() and np.abs(clips.audio).max() > 0.01
    with pytest.raises(CalibrationError, match="is at 16000 Hz"):
        load_calibration_clips(None, None, 8000, 8000, clips=4)
