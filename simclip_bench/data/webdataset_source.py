"""Training images from webdataset shards: tar files of ``<key>.jpg`` / ``.png`` / ``.webp`` (+ ``<key>.cls``).

The spec is a path or a brace pattern, e.g. ``/data/imagenet-train-{000000..001281}.tar``. Shards are
read in a seeded order per epoch (a permutation of the shard list, seed + epoch), samples within a
shard in file order: shuffle the samples when writing the shards, as usual for webdataset. The order
is therefore a pure function of (seed, epoch), which is what makes ``--resume`` exact: a resumed run
skips the samples already used without decoding them.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from braceexpand import braceexpand

from simclip_bench.data.files import LoadedImage
from simclip_bench.data.image_io import read_rgb
from simclip_bench.data.preprocess import PixelTransform
from simclip_bench.data.unreadable import describe
from simclip_bench.errors import UserError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp")
WDS_PREFIX = "wds:"


def is_webdataset_spec(spec: str) -> bool:
    return spec.startswith(WDS_PREFIX) or spec.endswith(".tar") or (".tar" in spec and "{" in spec)


def expand_shards(spec: str) -> list[str]:
    """The shard files of a spec (``wds:`` prefix optional, brace patterns expanded); missing files raise UserError."""
    pattern = spec[len(WDS_PREFIX):] if spec.startswith(WDS_PREFIX) else spec
    shards = list(braceexpand(pattern))
    missing = [s for s in shards if "://" not in s and not Path(s).is_file()]
    if missing:
        raise UserError(f"webdataset shard {missing[0]} does not exist ({len(missing)} of {len(shards)} missing)")
    return shards


@dataclass
class RawSample:
    key: str
    image_bytes: bytes | None
    label: int


class WebDatasetSource:
    """A stream of raw samples from shards, in a seeded per-epoch shard order; decoding is separate."""

    def __init__(self, spec: str, transform: PixelTransform, seed: int = 0) -> None:
        self.name = spec
        self.shards = expand_shards(spec)
        self.transform = transform
        self.seed = seed
        self.classnames: tuple[str, ...] | None = None

    def shard_order(self, epoch: int) -> list[str]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [self.shards[i] for i in torch.randperm(len(self.shards), generator=g).tolist()]

    def samples(self, epoch: int) -> Iterator[RawSample]:
        """All samples of one epoch, undecoded."""
        import webdataset as wds

        for shard in self.shard_order(epoch):
            for s in wds.WebDataset(shard, shardshuffle=False, empty_check=False):
                image = next((s[k] for k in IMAGE_KEYS if k in s), None)
                cls = s.get("cls")
                label = int(cls.decode() if isinstance(cls, bytes) else cls) if cls is not None else -1
                yield RawSample(s.get("__key__", "?"), image, label)

    def decode(self, raw: RawSample) -> LoadedImage:
        if raw.image_bytes is None:
            return LoadedImage(None, raw.label, f"{raw.key}: no image ({'/'.join(IMAGE_KEYS)}) in the sample")
        try:
            return LoadedImage(self.transform(read_rgb(io.BytesIO(raw.image_bytes))), raw.label)
        except Exception as e:  # noqa: BLE001 - an undecodable image is counted, not fatal
            return LoadedImage(None, raw.label, describe(raw.key, e))
