"""Batches for each optimizer step, split over micro-batches (gradient accumulation) and ranks (DDP).

A step takes ``batch_size`` images (the global batch): ``accum_steps`` micro-batches, each split into
``world_size`` equal slices, one per rank. Map-style data is read in a seeded permutation per epoch
(``seed + epoch``), one step after another, the tail of an epoch dropped, so the images of step ``s``
are a pure function of (seed, s); a stream (webdataset) is consumed in order and its position is saved.
Either way the data position is in the checkpoint and ``--resume`` continues with exactly the next images.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from simclip_bench.data.files import LoadedImage
from simclip_bench.data.webdataset_source import WebDatasetSource
from simclip_bench.errors import UserError


@dataclass
class MicroBatch:
    """Images (B,3,H,W) in [0,1], labels (B,) (-1: unlabelled), and the unreadable images that were skipped."""

    x: torch.Tensor
    labels: torch.Tensor
    errors: list[str] = field(default_factory=list)


def collate(items: list[LoadedImage]) -> MicroBatch:
    ok = [it for it in items if it.image is not None]
    errors = [it.error or "unreadable image" for it in items if it.image is None]
    if not ok:
        raise UserError(f"all {len(items)} images of a batch are unreadable, e.g. {errors[0]}")
    return MicroBatch(torch.stack([it.image for it in ok]), torch.tensor([it.label for it in ok]), errors)


@dataclass(frozen=True)
class Split:
    """How one optimizer step's global batch divides: ``batch_size = accum_steps * world_size * micro``."""

    batch_size: int
    accum_steps: int = 1
    world_size: int = 1
    rank: int = 0

    @property
    def micro(self) -> int:
        return self.batch_size // (self.accum_steps * self.world_size)

    def validate(self) -> None:
        if self.batch_size % (self.accum_steps * self.world_size):
            raise UserError(f"--batch-size {self.batch_size} (the global batch) must be divisible by --accum-steps "
                            f"{self.accum_steps} x {self.world_size} processes")

    def slice(self, micro_index: int) -> slice:
        start = micro_index * self.world_size * self.micro + self.rank * self.micro
        return slice(start, start + self.micro)


class _StepSampler:
    """Yields, from ``start_step`` on, the index list of each of this rank's micro-batches."""

    def __init__(self, n: int, split: Split, seed: int, start_step: int) -> None:
        self.n, self.split, self.seed, self.start_step = n, split, seed, start_step
        self.steps_per_epoch = n // split.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"--batch-size {split.batch_size} exceeds the {n} training images")

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, perm = self.start_step, -1, None
        while True:
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                perm = self.permutation(epoch)
            offset = (step % self.steps_per_epoch) * self.split.batch_size
            chunk = perm[offset:offset + self.split.batch_size]
            for m in range(self.split.accum_steps):
                yield chunk[self.split.slice(m)].tolist()
            step += 1


class MapBatches:
    """Micro-batches of a map-style source, read by a DataLoader (``workers`` processes)."""

    def __init__(self, dataset, split: Split, seed: int, start_state: dict | None = None, workers: int = 0) -> None:
        self.split = split
        self.step = int((start_state or {}).get("step", 0))
        self.sampler = _StepSampler(len(dataset), split, seed, self.step)
        loader = DataLoader(dataset, batch_sampler=self.sampler, collate_fn=collate, num_workers=workers,
                            persistent_workers=False)
        self._it = iter(loader)

    def next_step(self) -> list[MicroBatch]:
        batches = [next(self._it) for _ in range(self.split.accum_steps)]
        self.step += 1
        return batches

    def state(self) -> dict:
        spe = self.sampler.steps_per_epoch
        return {"kind": "map", "step": self.step, "epoch": self.step // spe,
                "position": (self.step % spe) * self.split.batch_size}


class StreamBatches:
    """Micro-batches of a webdataset stream; every rank reads the stream and decodes only its own slice."""

    def __init__(self, source: WebDatasetSource, split: Split, start_state: dict | None = None,
                 workers: int = 0) -> None:
        self.source, self.split = source, split
        state = start_state or {}
        self.epoch, self.position = int(state.get("epoch", 0)), int(state.get("position", 0))
        self._pool = ThreadPoolExecutor(max(workers, 1))
        self._it = self._skip(self.source.samples(self.epoch), self.position)

    @staticmethod
    def _skip(it, n: int):
        for _ in range(n):
            next(it, None)
        return it

    def _take(self, n: int) -> list:
        out = []
        while len(out) < n:
            raw = next(self._it, None)
            if raw is None:
                if self.position == 0 and not out:
                    raise UserError(f"webdataset {self.source.name} holds no samples")
                self.epoch, self.position = self.epoch + 1, 0
                self._it = self.source.samples(self.epoch)
                continue
            out.append(raw)
            self.position += 1
        return out

    def next_step(self) -> list[MicroBatch]:
        batches = []
        for _ in range(self.split.accum_steps):
            chunk = self._take(self.split.world_size * self.split.micro)
            mine = chunk[self.split.slice(0)]
            batches.append(collate(list(self._pool.map(self.source.decode, mine))))
        return batches

    def state(self) -> dict:
        return {"kind": "stream", "epoch": self.epoch, "position": self.position}
