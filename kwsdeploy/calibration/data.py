"""State-aware calibration data: the (input packet, every state input) tuples met while streaming real
clips through the fp32 step graph with ONNX Runtime.

Clips are joined end to end into a few long streams (as a device hears them: one clip's state flows
into the next, the first starts from the zero state), streamed packet by packet, and every kept
step's inputs are copied (independent arrays, never views of a buffer the next step overwrites).
Activation ranges measured on these tuples are those of real streaming, state tensors included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from kwsdeploy.contract import AUDIO, FEATURES, NEW_STATE_PREFIX, STATE_PREFIX
from kwsdeploy.hashing import sha256_bytes

DEFAULT_CLIPS = 64
DEFAULT_STREAMS = 8
DEFAULT_MAX_TUPLES = 1024
DEFAULT_SEED = 0
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class CalibrationClips:
    """Real 1 s clips chosen for calibration and where they came from."""

    audio: np.ndarray  # [N, samples] float32 at the card's rate
    source: str  # what the user passed (or the default corpus)
    split: str  # "train" for prepared data, "" for a folder
    indices: tuple[int, ...]  # which clips of the source, in stream order
    seed: int


@dataclass
class CalibrationSet:
    """Calibration tuples: one dict per kept step and stream row, `{input_name: [1, ...], state.*: [1, ...]}`."""

    input_name: str
    tuples: list[dict[str, np.ndarray]]
    streams: int
    steps: int  # steps streamed per stream
    stride: int  # every stride-th step was kept
    clips: CalibrationClips | None = None
    notes: list[str] = field(default_factory=list)
    feature_config: object = None  # to re-stream the clips (free-running SQNR)

    def __len__(self) -> int:
        return len(self.tuples)

    @property
    def names(self) -> list[str]:
        """Input names of every tuple (data input first, then state.* in graph order)."""
        return list(self.tuples[0]) if self.tuples else []

    def batches(self, batch: int = 64, equal: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """The tuples stacked into feeds of up to `batch` rows (the graphs have a dynamic batch axis);
        `equal`: every feed exactly `batch` rows (a remainder is dropped; ORT's histogram calibrators
        need equal shapes)."""
        n = len(self.tuples)
        if equal and n >= batch:
            n -= n % batch
        for i in range(0, n, batch):
            chunk = self.tuples[i:min(i + batch, n)]
            yield {k: np.concatenate([t[k] for t in chunk], axis=0) for k in chunk[0]}

    def reader(self, batch: int = 64):
        """An onnxruntime.quantization CalibrationDataReader over `batches(batch, equal=True)`."""
        from onnxruntime.quantization import CalibrationDataReader

        data = self

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = data.batches(batch, equal=True)

            def get_next(self):
                return next(self._it, None)

            def rewind(self) -> None:
                self._it = data.batches(batch, equal=True)

        return _Reader()

    def ranges(self) -> dict[str, tuple[float, float]]:
        """(min, max) of every input over the calibration tuples."""
        out: dict[str, tuple[float, float]] = {}
        for k in self.names:
            lo = min(float(t[k].min()) for t in self.tuples)
            hi = max(float(t[k].max()) for t in self.tuples)
            out[k] = (lo, hi)
        return out

    def check_state_ranges(self) -> None:
        """A state input that never left zero cannot be calibrated: say so (more or longer clips)."""
        for name, (lo, hi) in self.ranges().items():
            if name.startswith(STATE_PREFIX) and lo == hi:
                raise CalibrationError(
                    f"state input {name!r} has a range of zero ({lo:g}) over {len(self)} calibration tuples; "
                    "calibrate on more or longer clips (--calib-clips) so the stream fills it."
                )

    def record(self) -> dict:
        """The calibration record kept in the manifest: data, clip count, seed, streams, tuples, ranges' hash."""
        ranges = self.ranges()
        blob = ";".join(f"{k}:{lo:.9g}:{hi:.9g}" for k, (lo, hi) in sorted(ranges.items()))
        rec = {
            "tuples": len(self), "streams": self.streams, "steps_per_stream": self.steps, "stride": self.stride,
            "input": self.input_name, "state_inputs": [n for n in self.names if n.startswith(STATE_PREFIX)],
            "input_ranges_sha256": sha256_bytes(blob.encode()),
        }
        if self.clips is not None:
            rec.update(data=self.clips.source, split=self.clips.split, clips=len(self.clips.indices),
                       seed=self.clips.seed)
        return rec


# -- clips -------------------------------------------------------------------------------------
def _pick(n_available: int, n: int, seed: int) -> np.ndarray:
    take = n_available if n <= 0 else min(n, n_available)
    return np.random.default_rng(seed).permutation(n_available)[:take]


def load_calibration_clips(
    source: str | Path | None,
    labels: Sequence[str] | None,
    sample_rate: int,
    clip_samples: int,
    clips: int = DEFAULT_CLIPS,
    seed: int = DEFAULT_SEED,
) -> CalibrationClips:
    """Calibration clips from a prepared directory (its train split), a folder of label-named
    subfolders, or (None) the embedded demo corpus' train split. Refuses empty data, another sample
    rate than the card's, and labels the model does not know (`labels` None: any labels, for a model
    whose classes mean nothing yet, such as random weights timed by the benchmark)."""
    if source is None:
        from kwsdeploy.data.demo import demo_corpus_dir

        return _prepared_clips(Path(demo_corpus_dir()), labels, sample_rate, clips, seed, "demo corpus")
    path = Path(source)
    if not path.is_dir():
        raise CalibrationError(f"--calib-data {path} is not a directory; pass a prepared directory or a folder "
                               "of label-named subfolders of audio files.")
    if (path / "labels.json").is_file():
        return _prepared_clips(path, labels, sample_rate, clips, seed, str(path))
    return _folder_clips(path, labels, sample_rate, clip_samples, clips, seed)


def _unknown_labels(found: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    """The names in `found` that the model's `labels` lack (none when `labels` is None: any words)."""
    return [] if labels is None else [x for x in found if x not in labels]


def _prepared_clips(path: Path, labels, sample_rate: int, clips: int, seed: int, name: str) -> CalibrationClips:
    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.prepared import load_labels, load_meta, read_jsonl

    data_labels = load_labels(path)
    unknown = _unknown_labels(data_labels, labels)
    if unknown:
        raise CalibrationError(f"calibration data {name} has label(s) {unknown} that the model does not know "
                               f"(its labels: {', '.join(labels)}); calibrate on data of the model's words.")
    rate = int(load_meta(path).get("sample_rate", sample_rate))
    if rate != sample_rate:
        raise CalibrationError(f"calibration data {name} is at {rate} Hz but the model's card expects "
                               f"{sample_rate} Hz; prepare the data at {sample_rate} Hz.")
    if not (path / "train.jsonl").is_file() or not read_jsonl(path / "train.jsonl"):
        raise CalibrationError(f"calibration data {name} has no clips in its train split; prepare it again.")
    ds = KwsDataset(path, "train")
    picks = _pick(len(ds), clips, seed)
    audio = np.stack([np.asarray(ds.clip(int(i)), dtype=np.float32) for i in picks])
    return CalibrationClips(audio, name, "train", tuple(int(i) for i in picks), seed)


def _folder_clips(path: Path, labels, sample_rate: int, clip_samples: int, clips: int, seed: int) -> CalibrationClips:
    from kwsdeploy.audio import fit_clip, load_audio

    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_background")))
    unknown = _unknown_labels([p.name for p in subdirs], labels)
    if unknown:
        raise CalibrationError(f"calibration folder {path} has label folder(s) {unknown} that the model does not "
                               f"know (its labels: {', '.join(labels)}); remove them or rename them.")
    files = [f for sub in subdirs for f in sorted(sub.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise CalibrationError(f"calibration folder {path} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) in "
                               "label-named subfolders; put each word's clips in a folder named after it.")
    picks = _pick(len(files), clips, seed)
    audio = []
    for i in picks:
        x, info = load_audio(files[int(i)], sample_rate)
        if info.original_rate != sample_rate:
            raise CalibrationError(f"calibration file {files[int(i)]} is at {info.original_rate} Hz but the model's "
                                   f"card expects {sample_rate} Hz; resample the folder (e.g. sox in.wav -r "
                                   f"{sample_rate} out.wav) so calibration sees what the device hears.")
        audio.append(fit_clip(x, clip_samples))
    return CalibrationClips(np.stack(audio), str(path), "", tuple(int(i) for i in picks), seed)


# -- streaming ---------------------------------------------------------------------------------
def stream_inputs(audio: np.ndarray, input_name: str, feature_config) -> np.ndarray:
    """[S, samples] joined streams -> what the step graph eats: audio itself, or the streaming MFCC's
    frames (= offline MFCC of [zero cache + audio]) for a features graph. [S, ..., T]."""
    if input_name == AUDIO:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import torch

    from kwsdeploy.features import MFCC

    if not feature_config.causal:
        raise CalibrationError("this step graph takes reference-frontend features; export it with --frontend "
                               "to calibrate on audio.")
    cache = np.zeros((audio.shape[0], feature_config.n_fft - feature_config.hop_length), dtype=np.float32)
    with torch.no_grad():
        return MFCC(feature_config)(torch.from_numpy(np.concatenate([cache, audio], axis=1))).numpy()


def joined_streams(clips: CalibrationClips, streams: int = DEFAULT_STREAMS) -> np.ndarray:
    """[S, samples]: stream r = clips r*per .. (r+1)*per - 1 end to end (per = N // S)."""
    s = max(1, min(streams, len(clips.audio)))
    per = len(clips.audio) // s
    return clips.audio[: s * per].reshape(s, -1)


def collect_calibration(
    model: str | Path | bytes,
    clips: CalibrationClips,
    feature_config,
    streams: int = DEFAULT_STREAMS,
    max_tuples: int = DEFAULT_MAX_TUPLES,
) -> CalibrationSet:
    """Stream `clips` (joined into `streams` long streams) through the fp32 step graph from the zero
    state; keep every stride-th step's (input packet, state inputs) as independent copies."""
    import onnxruntime as ort

    if len(clips.audio) == 0:
        raise CalibrationError("no calibration clips; pass --calib-data with clips of the model's words.")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    data = [i for i in inputs if not i.name.startswith(STATE_PREFIX)]
    if len(data) != 1 or data[0].name not in (FEATURES, AUDIO):
        raise CalibrationError(f"not a kwsdeploy step graph (inputs {[i.name for i in inputs]}); calibrate a step "
                               "graph written by 'kwsdeploy export'.")
    name = data[0].name
    state_names = [i.name for i in inputs if i.name.startswith(STATE_PREFIX)]
    packet = int(data[0].shape[-1])
    joined = joined_streams(clips, streams)
    s = joined.shape[0]
    x = stream_inputs(joined, name, feature_config)
    steps = x.shape[-1] // packet
    stride = max(1, -(-steps * s // max_tuples))
    state = {n: np.zeros([s, *[int(d) for d in i.shape[1:]]], dtype=np.float32)
             for n, i in zip(state_names, [i for i in inputs if i.name in state_names])}
    outs = ["logits", *(NEW_STATE_PREFIX + n[len(STATE_PREFIX):] for n in state_names)]
    tuples: list[dict[str, np.ndarray]] = []
    for t in range(steps):
        feed = {name: np.ascontiguousarray(x[..., t * packet:(t + 1) * packet]), **state}
        if t % stride == 0:
            for r in range(s):  # one independent copy per stream row
                tuples.append({k: np.array(v[r:r + 1], copy=True) for k, v in feed.items()})
        res = sess.run(outs, feed)
        state = dict(zip(state_names, res[1:]))
    return CalibrationSet(name, tuples[:max_tuples] if max_tuples > 0 else tuples, s, steps, stride, clips,
                          feature_config=feature_config)
