"""Batch sizes that adapt to memory: on out-of-memory, halve the batch and go on.

Every batched loop of the package (zero-shot cells, the attack ensembles, VLM chunks and attack runs, the attack
gallery, a training step's micro-batches) runs its batches through one :class:`AdaptiveBatch`. A batch that runs
out of memory (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` is, or the CPU allocator's
"can't allocate memory") is dropped, the memory it held is released, and the same samples run again at half the
size; the smaller size is kept for the rest of the loop. Nothing is lost and no result changes, because every
attack of the package is batch-invariant: a sample's randomness is keyed by its index
(:mod:`simclip_bench.attacks.rng`) and its trajectory never depends on its batch mates. A training step is
split into more, smaller micro-batches with the same gradient (see :mod:`simclip_bench.train.session`).

Two cases stop with one line (:class:`~simclip_bench.errors.UserError`) instead: a batch of one that does not fit,
and a batch whose composition decides the result (``fixed``: the reference backend, whose randomness is drawn
per batch, so a split batch would give other numbers than the stored ones).

``--batch-size auto`` (the default on CUDA) starts from :data:`CUDA_START` and lets the halving find what fits;
on a CPU, where running out of memory kills the process rather than raising, it is the command's former
fixed default.
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from simclip_bench.errors import MAX_COUNT, UserError, first_line

T = TypeVar("T")
AUTO = "auto"
CUDA_START = 512  # a large power of two: each halving that follows costs one failed first batch
_CPU_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def parse_batch_size(value: str | int, option: str = "--batch-size") -> int | str:
    """``auto`` or a positive whole number; anything else is a UserError."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_COUNT:
        raise UserError(f"{option} must be a positive whole number or auto, got {value!r}")
    return int(text)


def resolve_batch_size(value: str | int, device: torch.device, cpu_default: int, cuda_start: int | None = None) -> int:
    """The starting size of ``value``: itself when a number; ``auto`` is ``cuda_start`` (default
    :data:`CUDA_START`) on CUDA and ``cpu_default`` elsewhere."""
    parsed = parse_batch_size(value)
    if parsed != AUTO:
        return int(parsed)
    return (cuda_start or CUDA_START) if torch.device(device).type == "cuda" else cpu_default


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator running out of memory (CUDA's OutOfMemoryError, or the CPU's)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _CPU_MESSAGES)


def release_memory() -> None:
    """Give back what a failed batch held: its tensors are garbage once its exception is gone."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class AdaptiveBatch:
    """A batch size that halves when a batch runs out of memory.

    ``size``: the current size (starting size at first); ``what``: what is batched, for messages (e.g.
    ``"zero-shot attack batch"``); ``fixed``: set when splitting would change the result, saying what to do
    instead; ``notify``: gets one line per halving; ``halved_from``: every size that ran out of memory.
    """

    size: int
    what: str = "batch"
    fixed: str | None = None
    notify: Callable[[str], None] | None = None
    halved_from: list[int] = field(default_factory=list)

    def run(self, attempt: Callable[[int], T]) -> T:
        """``attempt(size)`` at the current size; on out-of-memory, again at half the size, down to 1."""
        while True:
            try:
                return attempt(self.size)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
                if not is_out_of_memory(e):
                    raise
                reason = first_line(e)
            release_memory()  # outside the handler: the failed attempt's frames are gone
            self._halve(reason)

    def map_chunks(self, n: int, attempt: Callable[[slice], T]) -> list[T]:
        """``attempt(part)`` for consecutive parts of ``range(n)``, each of the current size; a part that runs out
        of memory is retried from its start at half the size. Returns the results in order."""
        results: list[T] = []
        start = 0
        while start < n:
            def one(size: int, start: int = start) -> tuple[int, T]:
                stop = min(n, start + size)
                return stop, attempt(slice(start, stop))

            start, result = self.run(one)
            results.append(result)
        return results

    def _halve(self, reason: str) -> None:
        if self.fixed:
            raise UserError(f"out of memory at {self.what} size {self.size} ({reason}); {self.fixed}")
        if self.size <= 1:
            raise UserError(f"out of memory even at {self.what} size 1 ({reason}); use a device with more memory, "
                            "a lower resolution or a smaller model")
        self.halved_from.append(self.size)
        self.size //= 2
        if self.notify:
            self.notify(f"out of memory at {self.what} size {self.halved_from[-1]}: going on at {self.size}")
