"""Lazy imports of TensorRT and cuda-python, with errors that say what to install."""

from __future__ import annotations

INSTALL_HINT = ("install TensorRT's Python package (pip install 'kwsdeploy[trt]' on an x86-64 machine with an "
                "NVIDIA GPU; on a Jetson use JetPack's python3-libnvinfer)")


class TensorRTMissing(RuntimeError):
    """TensorRT (or cuda-python) is not importable here."""


def have_tensorrt() -> bool:
    """Whether `import tensorrt` would find a package (nothing is imported)."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt():
    """The `tensorrt` module, or TensorRTMissing naming what to install."""
    try:
        import tensorrt
    except ImportError:
        raise TensorRTMissing(f"TensorRT is not installed here: {INSTALL_HINT}.") from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime API module (layout `cuda.bindings.runtime`, older `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise TensorRTMissing("cuda-python is not installed here: pip install 'kwsdeploy[trt]' "
                                  "(it brings cuda-python for device buffers).") from None
    return cudart


def cuda_check(result):
    """Unpack a cuda-python call's (error, *values); raise on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)
