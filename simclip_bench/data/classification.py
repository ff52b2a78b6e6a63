"""Labelled image sets for zero-shot classification, behind one small interface.

A source knows its class names and prompt templates, how many images it has, a stable id per
image, and how to load a set of images as a float tensor in [0,1] at a model's resolution (the
model's own resize and crop, without its normalisation: that lives inside the model wrapper, so
the eps-ball is in the pixels the model sees). Three kinds:

* :class:`ShapesSource` -- the built-in generated data (8 shapes; ``many_classes``: 64 shape x colour classes);
* :class:`ImageFolderSource` -- one sub-folder per class, with optional ``classnames.txt`` and
  ``templates.txt`` beside the class folders;
* :class:`TorchDatasetSource` -- a CLIP_benchmark dataset (torchvision or ImageFolder underneath).

:meth:`ClassificationSource.load_readable` returns the images that could be read and, for the others,
one line naming the file and the reason; :meth:`ClassificationSource.load` raises on the first of those.

Every source has an :meth:`~ClassificationSource.identity`: everything that decides its samples, labels and
prompts (where it was read, a fingerprint of the files there, the split, class names and templates). Its
hash, ``data_id``, is part of the key of every stored row (:mod:`simclip_bench.results.identity`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from simclip_bench.data.fingerprint import listing_fingerprint
from simclip_bench.data.image_io import read_rgb
from simclip_bench.data.shape_colors import ShapeColorsDataset
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.data.unreadable import describe, unreadable_error
from simclip_bench.errors import UserError

ImageTransform = Callable[[object], torch.Tensor]
"""PIL image -> (3, H, W) float tensor in [0,1] at the model's resolution."""

GENERIC_TEMPLATES: tuple[str, ...] = ("a photo of a {c}.",)


def format_template(template: str, classname: str) -> str:
    """Fill a prompt template written with ``{c}`` (CLIP_benchmark) or ``{}`` (CLIP)."""
    return template.replace("{c}", classname).replace("{}", classname)


@dataclass
class ImageBatch:
    """The readable ones among requested images: ``x`` (k, 3, H, W) in [0,1] and ``y`` (k,) int64 for the
    positions ``kept`` (into the requested indices, in order); ``unreadable`` maps each other position
    to one line naming the file and why it could not be read."""

    x: torch.Tensor
    y: torch.Tensor
    kept: list[int]
    unreadable: dict[int, str] = field(default_factory=dict)


class ClassificationSource:
    """Interface of a labelled image set; see the module docstring."""

    name: str
    split: str = "test"
    classnames: Sequence[str]
    templates: Sequence[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        raise NotImplementedError

    def identity(self) -> dict:
        """Everything that decides the samples, labels and prompts (JSON-able)."""
        raise NotImplementedError

    @property
    def source_text(self) -> str:
        """Where the samples come from, readably (the resolved folder, or ``generated``)."""
        raise NotImplementedError

    @cached_property
    def data_id(self) -> str:
        """The hash of :meth:`identity`: the data part of every stored row's key."""
        from simclip_bench.data.fingerprint import data_id

        return data_id(self.identity())

    def load(self, indices: Sequence[int], image_size: int,
             transform: ImageTransform | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, 3, H, W) in [0,1] and labels (n,) int64 of the samples ``indices``."""
        raise NotImplementedError

    def load_readable(self, indices: Sequence[int], image_size: int, transform: ImageTransform | None) -> ImageBatch:
        """Like :meth:`load`, but an image that cannot be read is left out and reported, not raised."""
        x, y = self.load(indices, image_size, transform)
        return ImageBatch(x, y, list(range(len(x))))


class ShapesSource(ClassificationSource):
    """The built-in generated test split, rendered directly at the model's resolution: labelled by shape
    (8 classes), or with ``many_classes`` by shape and colour (64, :mod:`simclip_bench.data.shape_colors`)."""

    def __init__(self, seed: int = 0, many_classes: bool = False) -> None:
        self._kind = ShapeColorsDataset if many_classes else ShapesDataset
        self.dataset = self._kind("test", seed=seed)
        self.name = self.dataset.name
        self.split = self.dataset.split
        self.classnames = list(self.dataset.classnames)
        self.templates = list(self.dataset.templates)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_id(self, index: int) -> str:
        return self.dataset.sample_id(index)

    def load(self, indices, image_size, transform):
        data = self._kind(self.split, seed=self.dataset.seed, size=len(self.dataset), image_size=image_size)
        return data.tensors(list(indices))

    def identity(self) -> dict:
        return {"kind": "generated", "generator": self.name, "split": self.split, "seed": self.dataset.seed,
                "size": len(self.dataset), "classnames": list(self.classnames), "templates": list(self.templates)}

    @property
    def source_text(self) -> str:
        return f"generated:{self.name}/{self.split} (seed {self.dataset.seed})"


class TorchDatasetSource(ClassificationSource):
    """Any indexable dataset of (PIL image, label) with ``classes`` (and ``templates``), built per transform.

    Args:
        name: how the dataset is named in result rows.
        build: ``transform -> dataset``; called once per distinct model preprocessing.
        classnames, templates: the zero-shot prompts' class names and templates.
        root: the folder that ImageFolder-style sample ids are relative to, and whose files (by relative path
            and size) are part of the identity.
        workers: DataLoader worker processes for decoding (default 0: in-process).
        index: the dataset built without a transform, when the caller already has it.
        builder: how the files are read, for the identity (e.g. ``{"kind": "clip_benchmark", "name": ...}``).
    """

    def __init__(self, name: str, build: Callable[[ImageTransform | None], object], classnames: Sequence[str],
                 templates: Sequence[str], root: Path | None = None, workers: int = 0, index: object = None,
                 builder: dict | None = None) -> None:
        self.name = name
        self.builder = dict(builder or {"kind": "dataset", "name": name})
        self._build = build
        self._built: dict[int, object] = {}
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.root = root
        self.workers = workers
        self._index = index if index is not None else build(None)
        self._size = len(self._index)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._size

    def identity(self) -> dict:
        return {**self.builder, "split": self.split, "root": str(self.root) if self.root else None,
                "files": listing_fingerprint(self.root) if self.root else None, "size": self._size,
                "classnames": list(self.classnames), "templates": list(self.templates)}

    @property
    def source_text(self) -> str:
        return str(self.root) if self.root else self.name

    def sample_id(self, index: int) -> str:
        samples = getattr(self._index, "samples", None)
        if samples is not None and self.root is not None:
            try:
                return Path(samples[index][0]).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return f"{index:07d}"

    def load(self, indices, image_size, transform):
        batch = self.load_readable(indices, image_size, transform)
        if batch.unreadable:
            raise unreadable_error("image", next(iter(batch.unreadable.values())))
        return batch.x, batch.y

    def load_readable(self, indices, image_size, transform) -> ImageBatch:
        key = id(transform)
        if key not in self._built:
            self._built[key] = self._build(transform)
        guarded = _Guarded(self._built[key], list(indices), self.name)
        loader = torch.utils.data.DataLoader(guarded, batch_size=max(len(guarded), 1), shuffle=False,
                                             num_workers=self.workers, collate_fn=_as_list)
        items = next(iter(loader), [])
        kept = [j for j, (_, _, error) in enumerate(items) if error is None]
        x = (torch.stack([items[j][0] for j in kept]).float().contiguous() if kept
             else torch.empty(0, 3, image_size, image_size))
        y = torch.as_tensor([int(items[j][1]) for j in kept], dtype=torch.long)
        return ImageBatch(x, y, kept, {j: error for j, (_, _, error) in enumerate(items) if error is not None})


class _Guarded(torch.utils.data.Dataset):
    """``dataset[indices[k]]`` as (image, label, None), or (None, None, reason) when it cannot be read.

    Any exception while reading one item (a truncated or garbage file, a decoder error) is that item's
    reason, so one bad file never takes the batch down with it; the caller decides what it means.
    """

    def __init__(self, dataset, indices: list[int], name: str) -> None:
        self.dataset, self.indices, self.name = dataset, indices, name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple:
        index = self.indices[k]
        try:
            image, label = self.dataset[index]
        except Exception as e:  # noqa: BLE001 - every failure to read an image is reported the same way
            return None, None, describe(self._file(index), e)
        return image, label, None

    def _file(self, index: int) -> str:
        samples = getattr(self.dataset, "samples", None)
        return str(samples[index][0]) if samples is not None else f"{self.name} sample {index}"


def _as_list(items: list) -> list:
    return items


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a UTF-8 text file."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def image_folder_source(root: Path, workers: int = 0) -> TorchDatasetSource:
    """A ``--dataset PATH`` folder: ``PATH/<class>/<image>``; ``classnames.txt`` (one name per line, in
    sorted folder order) and ``templates.txt`` (one prompt per line with ``{c}`` or ``{}``) are optional:
    class names default to the folder names with ``_`` as spaces, templates to ``a photo of a {c}.``."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--dataset {root}: no such folder; give a folder with one sub-folder of images per class")
    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(f"--dataset {root}: no class sub-folders; put each class's images in {root}/<class name>/")

    def build(transform):
        try:
            return ImageFolder(str(root), transform=transform, loader=read_rgb)
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"--dataset {root}: {e}") from None

    classnames = [c.replace("_", " ") for c in class_dirs]
    names_file, templates_file = root / "classnames.txt", root / "templates.txt"
    if names_file.exists():
        classnames = read_lines(names_file)
        if len(classnames) != len(class_dirs):
            raise UserError(f"{names_file} has {len(classnames)} names for {len(class_dirs)} class folders; "
                            "write one name per class folder, in sorted folder order")
    templates = read_lines(templates_file) if templates_file.exists() else list(GENERIC_TEMPLATES)
    bad = [t for t in templates if "{c}" not in t and "{}" not in t]
    if bad:
        raise UserError(f"{templates_file}: template {bad[0]!r} has no '{{c}}' placeholder for the class name")
    return TorchDatasetSource(root.resolve().name, build, classnames, templates, root=root.resolve(),
                              workers=workers, builder={"kind": "imagefolder"})
