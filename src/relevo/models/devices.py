"""Device and dtype options shared by every model-backed component.

``auto`` picks CUDA when torch sees a GPU, else the CPU. Validation imports nothing,
so constructors can check their options cheaply; resolution imports torch.
"""

from __future__ import annotations

import os
from typing import Any

from ..engine.deps import DEVICE_ENV  # what ``auto`` means; explicit devices are left alone
from ..engine.errors import ConfigError

DTYPES = ("auto", "float32", "float16", "bfloat16")


def auto_device_override() -> str | None:
    """``$RELEVO_DEVICE`` when set (validated), else ``None``."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower()
    if not value or value == "auto":
        return None
    ok = value in ("cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit())
    if not ok:
        raise ConfigError(
            f"{DEVICE_ENV}={value!r}: use cpu, cuda, cuda:N, mps or auto (or unset it)."
        )
    return value


def check_device(device: Any) -> str:
    """Validate a device option (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) without importing torch."""
    text = str(device)
    ok = text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit())
    if not isinstance(device, str) or not ok:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}.")
    return text


def resolve_device(device: str, *, what: str | None = None) -> str:
    """The concrete torch device for an option: ``auto`` becomes ``cuda`` or ``cpu``.

    Raises:
        ConfigError: ``cuda`` / ``cuda:N`` asked for but torch sees no such GPU, or
            ``mps`` asked for where torch has no MPS backend.
    """
    device = check_device(device)
    if device == "auto":
        device = auto_device_override() or "auto"
    if device == "cpu":
        return device
    from .deps import require

    (torch,) = require("torch", extra="torch", what=what or "device selection")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    who = f"{what}: " if what else ""
    if device.startswith("cuda"):
        index = int(device[5:]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(
                f"{who}device={device!r} was requested but torch sees "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA GPU(s) "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
                "Install a CUDA build of torch on a GPU machine, or use device='auto' or 'cpu'."
            )
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{who}device='mps' was requested but torch has no MPS backend here.")
    return device


def check_dtype(dtype: Any) -> str:
    """Validate a dtype option (``auto``, ``float32``, ``float16``, ``bfloat16``)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {dtype!r}.")
    return str(dtype)


def torch_dtype(torch: Any, device: str, dtype: str) -> Any:
    """The torch dtype for an option: ``auto`` is float32 on CPU, bfloat16 (else float16) on CUDA."""
    if check_dtype(dtype) != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def encoder_dtype(device: str, dtype: str) -> str:
    """The dtype name an encoder (bi-encoder, cross-encoder) runs in on a resolved device.

    ``auto``: float16 on CUDA (encoders lose nothing measurable in it and it has more
    mantissa than bfloat16), float32 elsewhere. Half precision on the CPU is refused:
    it is slower there, not faster.
    """
    dtype = check_dtype(dtype)
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        return "float16" if on_gpu else "float32"
    if dtype != "float32" and not on_gpu:
        raise ConfigError(
            f"dtype={dtype!r} needs a CUDA device (this one runs on {device}); "
            "use dtype='auto' or 'float32'."
        )
    return dtype


__all__ = [
    "DEVICE_ENV",
    "DTYPES",
    "auto_device_override",
    "check_device",
    "check_dtype",
    "encoder_dtype",
    "resolve_device",
    "torch_dtype",
]
