"""``--data``: where training images come from, by one spec string.

* ``shapes`` (default): the built-in generated shapes, ``--train-size`` images of the train split;
* a directory: ImageFolder / ImageNet layout (:func:`simclip_bench.data.files.image_folder`);
* a ``.csv`` or ``.jsonl`` file: a list of image paths with optional labels;
* ``wds:PATTERN`` or a ``.tar`` path / brace pattern: webdataset shards.

Map-style sources (all but webdataset) are indexable and return :class:`LoadedImage`; webdataset is a
stream (:class:`simclip_bench.data.webdataset_source.WebDatasetSource`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from simclip_bench.data.files import (
    LIST_SUFFIXES,
    FileImageDataset,
    LoadedImage,
    image_folder,
    list_file,
    read_class_names,
)
from simclip_bench.data.preprocess import PixelTransform
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FAIL, unreadable_error
from simclip_bench.data.webdataset_source import WebDatasetSource, is_webdataset_spec
from simclip_bench.errors import UserError

SHAPES = "shapes"


class ShapesTrainSource:
    """The built-in generated data as a map-style training source (rendered once, held in memory)."""

    def __init__(self, split: str, seed: int, size: int | None, image_size: int) -> None:
        self.data = ShapesDataset(split, seed=seed, size=size, image_size=image_size)
        self.name = f"shapes/{split}"
        self.classnames = self.data.classnames
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.data)

    def _arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            images, labels = self.data.arrays()
            self._images, self._labels = torch.from_numpy(images), torch.from_numpy(labels)
        return self._images, self._labels

    def __getitem__(self, index: int) -> LoadedImage:
        images, labels = self._arrays()
        return LoadedImage(images[index].permute(2, 0, 1).float().div_(255.0), int(labels[index]))


@dataclass
class DataSpec:
    """Resolved ``--data``: the source, its kind and its class names (None when unlabelled or unnamed)."""

    spec: str
    kind: str  # shapes | imagefolder | list | webdataset
    source: object
    classnames: tuple[str, ...] | None


def _with_class_names(dataset, class_names: str | None):
    if class_names:
        labels = getattr(dataset, "labels", None)
        n = (max(labels) + 1) if labels else None
        dataset.classnames = read_class_names(Path(class_names), n)
    return dataset


def open_train_data(spec: str, transform: PixelTransform, image_size: int, seed: int = 0,
                    train_size: int | None = None, class_names: str | None = None) -> DataSpec:
    """Open ``--data`` (see module docstring). ``class_names``: optional file of names in label order."""
    spec = spec.strip()
    if spec == SHAPES:
        return DataSpec(spec, "shapes", ShapesTrainSource("train", seed, train_size, image_size),
                        ShapesDataset.classnames)
    if is_webdataset_spec(spec):
        src = _with_class_names(WebDatasetSource(spec, transform, seed), class_names)
        return DataSpec(spec, "webdataset", src, src.classnames)
    path = Path(spec).expanduser()
    if path.is_dir():
        ds = _with_class_names(image_folder(path, transform, "train"), class_names)
        return DataSpec(spec, "imagefolder", ds, ds.classnames)
    if path.suffix.lower() in LIST_SUFFIXES:
        if not path.is_file():
            raise UserError(f"--data: list file {path} does not exist")
        ds = _with_class_names(list_file(path, transform), class_names)
        return DataSpec(spec, "list", ds, ds.classnames)
    if path.exists():
        raise UserError(f"--data: cannot tell what {path} is; pass a directory (ImageFolder), a .csv / .jsonl "
                        "list, webdataset shards (.tar or wds:PATTERN) or 'shapes'")
    raise UserError(f"--data: {spec!r} does not exist; pass 'shapes', an ImageFolder directory, a .csv / .jsonl list "
                    "or webdataset shards")


def open_probe_data(spec: str, transform: PixelTransform, image_size: int, seed: int, size: int,
                    class_names: tuple[str, ...] | None,
                    on_error: str = DEFAULT_ON_ERROR) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Held-out labelled images for the zero-shot probe: (N,3,H,W) in [0,1] and labels; None if there are none.

    ``shapes`` uses the val split; an ImageNet-layout directory its ``val`` folder; other data has no probe
    unless ``--probe-data`` names a labelled ImageFolder or list file. Unreadable images are left out
    (``on_error="skip"``) or raised (``"fail"``).
    """
    if spec == SHAPES:
        return ShapesDataset("val", seed=seed, size=size, image_size=image_size).tensors()
    path = Path(spec).expanduser()
    ds: FileImageDataset | None = None
    if path.is_dir() and (path / "val").is_dir():
        ds = image_folder(path, transform, "val")
    elif path.is_dir():
        ds = image_folder(path, transform, "")
    elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
        ds = list_file(path, transform)
    if ds is None or class_names is None or min(ds.labels) < 0:
        return None
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(ds), generator=g)[:size].tolist()
    loaded = [ds[i] for i in pick]
    bad = next((item.error for item in loaded if item.image is None), None)
    if bad is not None and on_error == FAIL:
        raise unreadable_error("probe image", bad)
    ok = [item for item in loaded if item.image is not None]
    if not ok:
        return None
    return torch.stack([item.image for item in ok]), torch.tensor([item.label for item in ok])
