"""Per-sample, counter-based randomness, so a sample's attack never depends on its batch.

Every random number an attack draws for a sample is a hash of (the sample's seed, a stream
number, the element's position). The same sample therefore gets the same random start and the
same Square proposals whether it is attacked alone, in a batch of 7 or of 500, in any order, on
any device. The hash is Chris Wellons' 32-bit ``lowbias32``, evaluated on int64 tensors.
"""
from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on the low 32 bits of an int64 tensor; returns values in [0, 2**32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def sample_seeds(seed: int, sample_index: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """One int64 seed per sample from a run seed, the samples' global indices and a salt (e.g. a restart)."""
    base = int(_hash32(torch.tensor([(seed + 0x6A09E667) & _MASK32], dtype=torch.int64))[0])
    base ^= salt * 0x9E3779B1 & _MASK32
    return _hash32(sample_index.to(torch.int64).cpu() * 0x85EBCA6B + base)


def sample_uniform(seeds: torch.Tensor, stream: int, shape: tuple[int, ...],
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0,1) numbers of shape (B, *shape): row b depends only on (seeds[b], stream)."""
    n = math.prod(shape)
    seeds = seeds.to(torch.int64).to(device)
    row = _hash32(seeds * 0x27D4EB2F + (stream * 0x165667B1 & _MASK32))
    pos = torch.arange(n, device=device, dtype=torch.int64)
    bits = _hash32(row[:, None] ^ _hash32(pos * 0x9E3779B1 + 0x632BE5AB)[None, :])
    return (bits.to(torch.float64) / 2.0**32).to(dtype).view(len(seeds), *shape)


def sample_normal(seeds: torch.Tensor, stream: int, shape: tuple[int, ...],
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers (Box-Muller over two uniform streams), per-sample like :func:`sample_uniform`."""
    u1 = sample_uniform(seeds, 2 * stream + 1, shape, device, torch.float64).clamp_min(1e-12)
    u2 = sample_uniform(seeds, 2 * stream + 2, shape, device, torch.float64)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).to(dtype)
