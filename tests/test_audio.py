"""Audio I/O: int16 scaling, resampling, stereo, one-line errors, fit_clip, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwsdeploy.audio import AudioError, AudioInfo, fit_clip, load_audio, save_wav_atomic

FIXTURES = Path(__file__).parent / "fixtures"
FSDD = sorted((FIXTURES / "fsdd").glob("*.wav"))
REF_WAV = sorted((FIXTURES / "reference" / "wavs").glob("*.wav"))[0]


def test_int16_read_as_over_32768():
    x, info = load_audio(REF_WAV)
    raw, rate = sf.read(str(REF_WAV), dtype="int16")
    assert info == AudioInfo(original_rate=16000, channels=1, frames=16000, notes=())
    assert x.dtype == np.float32 and x.shape == (16000,)
    assert np.array_equal(x, raw.astype(np.float32) / 32768.0)


def test_fsdd_8k_is_resampled_to_twice_the_length():
    for path in FSDD:
        x, info = load_audio(path)
        raw, rate = sf.read(str(path), dtype="int16")
        assert rate == info.original_rate == 8000 and info.frames == len(raw)
        assert len(x) == 2 * len(raw)
        assert any("resampled 8000 Hz -> 16000 Hz" in n for n in info.notes)
        # energy is kept by the band-limited resampler (speech sits below 4 kHz)
        e_in = float(np.mean((raw / 32768.0) ** 2))
        e_out = float(np.mean(x.astype(np.float64) ** 2))
        assert abs(e_out / e_in - 1.0) < 0.05
        # and every original sample reappears at the even positions (up to the filter's ripple)
        err = np.abs(x[::2] - raw / 32768.0).max() / np.abs(raw / 32768.0).max()
        assert err < 0.05


def test_resampled_sine_is_accurate(tmp_path):
    t8 = np.arange(8000) / 8000.0
    p = tmp_path / "sine8k.wav"
    sf.write(str(p), 0.5 * np.sin(2 * np.pi * 440 * t8), 8000, subtype="FLOAT")
    x, info = load_audio(p)
    t16 = np.arange(16000) / 16000.0
    want = 0.5 * np.sin(2 * np.pi * 440 * t16)
    err = np.abs(x[200:-200] - want[200:-200]).max()  # away from the edges
    assert len(x) == 16000 and err < 1e-3


def test_stereo_is_averaged(tmp_path):
    p = tmp_path / "stereo.wav"
    left, right = np.full(1600, 0.5), np.full(1600, -0.25)
    sf.write(str(p), np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    x, info = load_audio(p)
    assert info.channels == 2 and info.notes == ("averaged 2 channels to mono",)
    assert np.allclose(x, 0.125, atol=1 / 32768)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found") as e:
        load_audio(tmp_path / "nope.wav")
    assert "\n" not in str(e.value) and "Check the path" in str(e.value)


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunkjunk" * 4)
    with pytest.raises(AudioError, match="Cannot read audio file") as e:
        load_audio(p)
    assert "\n" not in str(e.value)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="Cannot read audio file"):
        load_audio(noise)


def test_empty_file_and_zero_length_audio(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    zero = tmp_path / "zero.wav"
    sf.write(str(zero), np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(zero)
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_fit_clip():
    x = np.arange(1, 11, dtype=np.float32)
    padded = fit_clip(x, 16)
    assert padded.shape == (16,) and np.array_equal(padded[:10], x) and not padded[10:].any()
    assert np.array_equal(fit_clip(x, 4), x[:4])
    assert fit_clip(np.ones(16000), 16000).shape == (16000,)
    with pytest.raises(AudioError, match="1-D"):
        fit_clip(np.zeros((2, 10)), 16)


def test_save_wav_atomic_roundtrip(tmp_path):
    x = (np.arange(-8, 8, dtype=np.float32) / 8.0) * 0.9
    out = save_wav_atomic(tmp_path / "sub" / "clip.wav", x, 16000)
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["clip.wav"]  # no temp left
    back, info = load_audio(out)
    assert info.original_rate == 16000 and np.abs(back - x).max() <= 1 / 32768
    # overwriting replaces the file in one step
    save_wav_atomic(out, np.zeros(4), 16000)
    assert sf.info(str(out)).frames == 4
    with pytest.raises(AudioError):
        save_wav_atomic(tmp_path / "e.wav", np.zeros(0), 16000)


def test_a_truncated_wav_is_read_with_a_note(tmp_path):
    from kwsdeploy.audio import load_audio, save_wav_atomic

    full = save_wav_atomic(tmp_path / "full.wav", np.zeros(16000, dtype=np.float32) + 0.1, 16000)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + 8000])  # half of the 32000 audio bytes
    x, info = load_audio(cut)
    assert len(x) == 4000
    assert any("truncated" in n and "32000 bytes" in n and "8000 (25%)" in n for n in info.notes), info.notes
    assert not any("truncated" in n for n in load_audio(full)[1].notes)


def test_reading_a_stereo_44k_file_in_blocks_equals_reading_it_whole(tmp_path):
    from kwsdeploy.audio import load_audio, read_blocks

    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((44100 * 12, 2))).astype(np.float32)
    sf.write(str(tmp_path / "st.wav"), x, 44100, subtype="PCM_16")
    whole, info = load_audio(tmp_path / "st.wav")
    reader = read_blocks(tmp_path / "st.wav", block_seconds=1.7)
    parts = np.concatenate(list(reader))
    assert len(parts) == len(whole) == 192000 and np.array_equal(parts, whole)  # soxr streams bit-exactly
    assert reader.notes == list(info.notes) and reader.seconds == 12.0
