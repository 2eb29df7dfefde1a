"""A stand-in for TensorRT and cuda-python written to their documented Python APIs, backed by ONNX
Runtime and numpy "device" memory: lets the TensorRT runner's logic (two state sets swapped, tensor
addresses per step, CUDA graph capture and replay, per-stream reset) run and be compared with the
ONNX Runtime runner where no GPU exists. An "engine" file here is the ONNX graph's bytes."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort

OK = 0


class FakeStream:
    """cuda-python's cudaStream_t converts to its integer handle."""

    def __int__(self) -> int:
        return 0x5EED


class FakeCudart:
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self) -> None:
        self.device: dict[int, np.ndarray] = {}
        self.host: dict[int, np.ndarray] = {}
        self._next = 1 << 20
        self.capture: list | None = None
        self.launches = {"graph": 0, "ops": 0}

    # memory
    def cudaSetDevice(self, d):
        return (OK,)

    def cudaMalloc(self, n):
        addr = self._next
        self.device[addr] = np.zeros(n, np.uint8)
        self._next += n + 4096
        return (OK, addr)

    def cudaMallocHost(self, n):
        buf = np.zeros(n, np.uint8)
        self.host[buf.ctypes.data] = buf
        return (OK, buf.ctypes.data)

    def dev(self, addr: int, n: int) -> np.ndarray:
        base = max(b for b in self.device if b <= addr)
        off = addr - base
        assert off + n <= self.device[base].size, "device access out of bounds"
        return self.device[base][off:off + n]

    @staticmethod
    def hostview(addr: int, n: int) -> np.ndarray:
        return np.frombuffer((ctypes.c_byte * n).from_address(addr), np.uint8)

    def _enqueue(self, op) -> None:
        if self.capture is not None:
            self.capture.append(op)
        else:
            self.launches["ops"] += 1
            op()

    def _memcpy(self, dst, src, n, kind):
        if kind == 1:
            self.dev(dst, n)[:] = self.hostview(src, n)
        else:
            self.hostview(dst, n)[:] = self.dev(src, n)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self._enqueue(lambda: self._memcpy(dst, src, n, kind))
        return (OK,)

    def cudaMemcpy(self, dst, src, n, kind):
        self._memcpy(dst, src, n, kind)
        return (OK,)

    def cudaMemsetAsync(self, ptr, value, n, stream):
        def op():
            self.dev(ptr, n)[:] = value
        self._enqueue(op)
        return (OK,)

    # streams and graphs
    def cudaStreamCreate(self):
        return (OK, FakeStream())

    def cudaStreamSynchronize(self, s):
        return (OK,)

    def cudaStreamBeginCapture(self, s, mode):
        self.capture = []
        return (OK,)

    def cudaStreamEndCapture(self, s):
        ops, self.capture = self.capture, None
        return (OK, ops)

    def cudaGraphInstantiate(self, graph, flags):
        return (OK, list(graph))

    def cudaGraphLaunch(self, exe, s):
        self.launches["graph"] += 1
        for op in exe:
            op()
        return (OK,)

    def cudaGetDeviceProperties(self, device):
        return (OK, SimpleNamespace(name=b"Fake GPU", major=8, minor=7))

    def cudaGraphExecDestroy(self, e):
        return (OK,)

    cudaGraphDestroy = cudaFree = cudaFreeHost = cudaStreamDestroy = cudaGraphExecDestroy


def fake_tensorrt(cudart: FakeCudart, version: str = "10.3.0.30") -> SimpleNamespace:
    """A `tensorrt` module stand-in whose engines run their ONNX bytes with ONNX Runtime."""
    io_mode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    to_np = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream):
            assert isinstance(stream, int), "execute_async_v3 takes the stream's integer handle"
            addr = dict(self.addr)  # bound now, as a captured graph would bake them in
            batch = next(iter(self.shapes.values()))[0]

            def op():
                feeds = {}
                for i in self.engine.sess.get_inputs():
                    shape = (batch, *i.shape[1:])
                    n = int(np.prod(shape)) * 4
                    feeds[i.name] = cudart.dev(addr[i.name], n).view(np.float32).reshape(shape).copy()
                outs = self.engine.sess.run(None, feeds)
                for o, value in zip(self.engine.sess.get_outputs(), outs):
                    raw = np.ascontiguousarray(value, np.float32).view(np.uint8).ravel()
                    cudart.dev(addr[o.name], raw.size)[:] = raw
            cudart._enqueue(op)
            return True

    class Engine:
        def __init__(self, data: bytes):
            self.sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.io = [(i, True) for i in self.sess.get_inputs()] + [(o, False) for o in self.sess.get_outputs()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0].name

        def _find(self, name):
            return next((t, is_in) for t, is_in in self.io if t.name == name)

        def get_tensor_mode(self, name):
            return io_mode.INPUT if self._find(name)[1] else io_mode.OUTPUT

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self._find(name)[0].shape)

        def get_tensor_dtype(self, name):
            return to_np[self._find(name)[0].type]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(bytes(data))

    class Logger:
        WARNING = 2

        def __init__(self, severity=None):
            pass

    calls: list[tuple] = []  # what the builder was asked, in order

    class Network:
        def __init__(self, flags):
            self.flags, self.onnx = flags, None

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse(self, data):
            self.network.onnx = bytes(data)
            calls.append(("parse", len(data)))
            return True

    class Cache:
        def __init__(self, data=b""):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+tuned"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("profile",))

        def create_timing_cache(self, data):
            calls.append(("cache_in", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return network.onnx  # the stand-in's engine is the graph itself

    return SimpleNamespace(
        __version__=version, Logger=Logger, TensorIOMode=io_mode, Runtime=Runtime, nptype=lambda dt: dt,
        Builder=Builder, OnnxParser=OnnxParser, calls=calls,
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32"),
    )
