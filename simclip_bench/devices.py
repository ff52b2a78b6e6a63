"""Device choice and mixed precision: ``auto`` means CUDA when present, else CPU.

Precision (``--precision auto|fp32|bf16``) is the dtype of the attack *search* (autocast); every verdict
that is reported (a float32 prediction, a generated text) is computed in float32 outside it. ``auto`` is
float32 on a CPU and bf16 on CUDA (float32 for the targeted caption attack, as its reference); ``bf16``
also runs on a CPU (``torch.autocast("cpu")``), so the code path users run on GPUs is tested here.

float16 is not offered: without loss scaling its backward pass underflows. On the built-in zero-shot
classifier 70 % of the input-gradient entries came out exactly 0 under fp16 autocast (median magnitude
2.5e-11 in fp32, below fp16's smallest subnormal), and APGD-CE (100 iterations, 4/255) left 68 % of 200
images robust against 13 % with fp32 or bf16. bf16 keeps float32's exponent range
(``benchmarks/fp16_underflow.py``, ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import contextlib
import re

import torch

from simclip_bench.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch device; bad or unavailable names raise UserError."""
    name = name.strip().lower()
    if not _DEVICE.match(name):
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(name)


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(name: str) -> str:
    """``name`` if it is one of :data:`PRECISIONS`; otherwise a UserError with a suggestion."""
    from simclip_bench.errors import did_you_mean

    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}"
                        f"{did_you_mean(name, PRECISIONS)}")
    return name


def resolve_precision(name: str, device: torch.device, cuda_default: str = "bf16") -> str:
    """``fp32`` or ``bf16``: ``auto`` is ``cuda_default`` on CUDA and ``fp32`` elsewhere."""
    check_precision(name)
    if name == "auto":
        return cuda_default if device.type == "cuda" else "fp32"
    return name


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a resolved precision (a no-op for ``fp32``), on CUDA and on a CPU alike."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def autocast(device: torch.device, enabled: bool = True):
    """The default search precision: bf16 autocast on CUDA (where it is safe and fast); a no-op on CPU."""
    return autocast_for(resolve_precision("auto", device) if enabled else "fp32", device)
