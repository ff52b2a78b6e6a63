"""Device choice and mixed precision: ``auto`` means CUDA when present, else CPU."""
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


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (where it is safe and fast); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
