#!/usr/bin/env python3
"""Stream a WAV file through this bundle's step model and print the keywords heard, with their times.

Standalone: needs numpy and either TensorRT (with cuda-python and an engine from build_engine.sh)
or ONNX Runtime; never torch or kwsdeploy. Detection (softmax, smoothing, threshold, refractory
period) is `kws_detect.py` beside this file, with the settings in manifest.json.

    python3 run.py recording.wav [--backend auto|tensorrt|onnxruntime] [--engine FILE] [--json]
    python3 run.py --golden [--backend ...]   # the bundle's golden input vs the logits stored at export
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np

from kws_detect import KeywordDetector

HERE = Path(__file__).resolve().parent
STATE, NEW_STATE = "state.", "new_state."


def load_json(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def read_wav(path: str, rate: int) -> tuple[np.ndarray, list[str]]:
    """PCM WAV as float32 mono in [-1, 1] (channels averaged); other rates resampled linearly."""
    notes = []
    try:
        with wave.open(path, "rb") as w:
            channels, width, src_rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise SystemExit(f"error: {path}: not a PCM WAV file ({exc}); convert it to 16-bit PCM WAV.")
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2.0 ** 31).astype(np.float32)
    else:
        raise SystemExit(f"error: {path}: {8 * width}-bit samples are not supported; convert to 16-bit PCM WAV.")
    x = x.reshape(-1, channels)
    x = x.mean(axis=1, dtype=np.float64).astype(np.float32) if channels > 1 else x[:, 0].copy()
    if channels > 1:
        notes.append(f"averaged {channels} channels to mono")
    if src_rate != rate:
        t = np.arange(int(round(len(x) * rate / src_rate))) * (src_rate / rate)
        x = np.interp(t, np.arange(len(x)), x).astype(np.float32)
        notes.append(f"resampled {src_rate} Hz -> {rate} Hz linearly (resample to {rate} Hz beforehand for "
                     "results identical to kwsdeploy)")
    return np.ascontiguousarray(x), notes


class OrtStep:
    """The step graph on ONNX Runtime, state carried between calls."""

    backend = "onnxruntime"

    def __init__(self, path: Path, batch: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = self.sess.get_inputs()
        self.data = next(i.name for i in inputs if not i.name.startswith(STATE))
        dt = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        self.init = {i.name: np.zeros((batch, *i.shape[1:]), dt[i.type]) for i in inputs if i.name.startswith(STATE)}
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.reset()

    def reset(self) -> None:
        self.state = {k: v.copy() for k, v in self.init.items()}

    def step(self, x: np.ndarray) -> np.ndarray:
        out = dict(zip(self.outputs, self.sess.run(None, {self.data: x, **self.state})))
        self.state = {k: out[NEW_STATE + k[len(STATE):]] for k in self.state}
        return out["logits"]


class TrtStep:
    """The engine on TensorRT: two device state sets swapped between steps (no state copies)."""

    backend = "tensorrt"

    def __init__(self, path: Path, batch: int = 1) -> None:
        import tensorrt as trt
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt
        self.rt = rt
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise SystemExit(f"error: {path.name} does not load on this TensorRT/GPU; rebuild it with ./build_engine.sh")
        self.ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.data = next(n for n in inputs if not n.startswith(STATE))
        self.states = [n for n in inputs if n.startswith(STATE)]
        shape = {n: (batch, *tuple(engine.get_tensor_shape(n))[1:]) for n in names}
        dtype = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        for n in inputs:
            self.ctx.set_input_shape(n, shape[n])
        self.nbytes = {n: int(np.prod(shape[n])) * dtype[n].itemsize for n in names}
        self.stream = self._ok(rt.cudaStreamCreate())
        self.dev = {n: self._ok(rt.cudaMalloc(self.nbytes[n])) for n in (self.data, "logits")}
        for n in self.states:
            self.dev[n] = (self._ok(rt.cudaMalloc(self.nbytes[n])), self._ok(rt.cudaMalloc(self.nbytes[n])))
        self.x = np.zeros(shape[self.data], dtype[self.data])
        self.out = np.zeros(shape["logits"], dtype["logits"])
        self.reset()

    @staticmethod
    def _ok(result):
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(getattr(err, "value", err)) != 0:
            raise SystemExit(f"error: CUDA error {err}")
        return values[0] if values else None

    def reset(self) -> None:
        self.parity = 0
        for n in self.states:
            for ptr in self.dev[n]:
                self._ok(self.rt.cudaMemsetAsync(ptr, 0, self.nbytes[n], self.stream))
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def step(self, x: np.ndarray) -> np.ndarray:
        rt, kind = self.rt, self.rt.cudaMemcpyKind
        np.copyto(self.x, x)
        self._ok(rt.cudaMemcpyAsync(self.dev[self.data], self.x.ctypes.data, self.x.nbytes,
                                    kind.cudaMemcpyHostToDevice, self.stream))
        self.ctx.set_tensor_address(self.data, self.dev[self.data])
        self.ctx.set_tensor_address("logits", self.dev["logits"])
        for n in self.states:
            self.ctx.set_tensor_address(n, self.dev[n][self.parity])
            self.ctx.set_tensor_address(NEW_STATE + n[len(STATE):], self.dev[n][1 - self.parity])
        try:
            handle = int(self.stream)  # cuda-python's cudaStream_t converts to its handle
        except (TypeError, ValueError):
            handle = self.stream
        if not self.ctx.execute_async_v3(handle):
            raise SystemExit("error: execute_async_v3 failed (see TensorRT's log)")
        self._ok(rt.cudaMemcpyAsync(self.out.ctypes.data, self.dev["logits"], self.out.nbytes,
                                    kind.cudaMemcpyDeviceToHost, self.stream))
        self._ok(rt.cudaStreamSynchronize(self.stream))
        self.parity ^= 1
        return self.out.copy()


class Settings:
    """The manifest's detection settings as `KeywordDetector.from_settings` reads them."""

    def __init__(self, d: dict) -> None:
        self.__dict__.update({k: v for k, v in d.items() if k != "tuned"})

    def smoothing_packets(self, hop_s: float) -> int:
        return max(1, int(round(self.smoothing_seconds / hop_s)))


def engine_path(device: dict, given: str | None) -> Path | None:
    """--engine, else model.<precision>.trt<major>.<minor>.engine for the TensorRT installed here."""
    if given:
        return Path(given)
    try:
        import tensorrt as trt
    except ImportError:
        return None
    major, minor = (trt.__version__.split(".") + ["0"])[:2]
    path = HERE / f"model.{device['precision']}.trt{major}.{minor}.engine"
    return path if path.is_file() else None


def open_step(device: dict, backend: str, engine: str | None, batch: int = 1):
    """The TensorRT engine when asked for or found, else the ONNX graph on ONNX Runtime."""
    if backend in ("auto", "tensorrt"):
        path = engine_path(device, engine)
        if path is not None:
            try:
                return TrtStep(path, batch)
            except ImportError as exc:
                raise SystemExit(f"error: {exc}: TensorRT needs cuda-python here (pip install cuda-python)")
        if backend == "tensorrt":
            raise SystemExit("error: no TensorRT engine here: run ./build_engine.sh first (or pass --engine FILE)")
    try:
        return OrtStep(HERE / device["onnx"], batch)
    except ImportError:
        raise SystemExit("error: neither a TensorRT engine nor ONNX Runtime here: run ./build_engine.sh "
                         "(JetPack's TensorRT) or pip install onnxruntime")


def stream_logits(runner, audio: np.ndarray, packet: int) -> np.ndarray:
    """Logits [packets, classes] of the audio fed packet by packet from the zero state (a last partial
    packet is dropped)."""
    runner.reset()
    n = len(audio) // packet
    return np.stack([runner.step(audio[None, i * packet:(i + 1) * packet])[0] for i in range(n)]) if n else \
        np.zeros((0, len(load_json("manifest.json")["labels"])), np.float32)


def golden(device: dict, backend: str, engine: str | None) -> int:
    """Max |logits - stored torch logits| on the golden input, each clip streamed alone; 0 if within tolerance."""
    with np.load(HERE / "golden.npz") as z:
        x, want = z[device["golden"] + ".input"], z[device["golden"] + ".logits"]
    runner = open_step(device, backend, engine)
    got = np.stack([stream_logits(runner, x[i], device["packet_samples"]) for i in range(x.shape[0])], axis=1)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    ok = err <= device["golden_atol"]
    print(json.dumps({"backend": runner.backend, "max_abs": err, "atol": device["golden_atol"], "ok": ok,
                      "steps": int(got.shape[0]), "clips": int(got.shape[1])}))
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Keyword events in a WAV file, streamed through this bundle's model.")
    p.add_argument("wav", nargs="?", help="16 kHz mono PCM WAV (other rates and stereo are converted)")
    p.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime"), default="auto",
                   help="auto: the TensorRT engine when there is one, else ONNX Runtime")
    p.add_argument("--engine", help="engine file (default: model.<precision>.trt<version>.engine here)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--golden", action="store_true", help="check the golden input instead of streaming a file")
    args = p.parse_args(argv)
    device = load_json("device.json")
    if args.golden:
        return golden(device, args.backend, args.engine)
    if not args.wav:
        p.error("give a WAV file (or --golden)")
    manifest = load_json("manifest.json")
    fc, det = manifest["feature_config"], manifest["detection"]
    hop = device["packet_frames"] * fc["hop_length"] / fc["sample_rate"]
    audio, notes = read_wav(args.wav, fc["sample_rate"])
    runner = open_step(device, args.backend, args.engine)
    detector = KeywordDetector.from_settings(manifest["labels"], hop, Settings(det))
    events = detector.update(stream_logits(runner, audio, device["packet_samples"])) if len(audio) else []
    seconds = len(audio) / fc["sample_rate"]
    if args.json:
        print(json.dumps({"file": args.wav, "backend": runner.backend, "seconds": seconds, "notes": notes,
                          "detections": [e.to_dict() for e in events]}, indent=1))
        return 0
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{Path(args.wav).name}: {seconds:.2f} s through {manifest['model'].get('name', '?')} "
          f"({runner.backend}), hop {hop * 1000:.0f} ms")
    for e in events:
        print(f"  {e.time:8.2f} s  {e.label:<12} p={e.score:.2f}")
    if not events:
        print("  no keyword detected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
