"""Training images from files: an ImageFolder / ImageNet directory, or a CSV / JSONL list of paths.

* **ImageFolder** (``ROOT/<class>/<image>``; for the ImageNet layout ``ROOT/train/<wnid>/...`` the
  ``train`` folder is used): labels are the sorted class-folder names, as in torchvision.
* **List file** (``.csv`` with a header, or ``.jsonl`` with one object per line): a ``path`` column
  and an optional ``label`` column, either class names or integers 0..C-1. A relative path is read
  from the list file's folder and must stay inside it (no ``..`` or symbolic-link escape, see
  :mod:`simclip_bench.data.manifest_paths`); an absolute path may name an image anywhere.

An image that cannot be read is reported as ``None`` with the reason, never raised: the batch loader
counts and skips it (or stops, with ``--on-error fail``).
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from simclip_bench.data.image_io import read_rgb
from simclip_bench.data.manifest_paths import ManifestFolder
from simclip_bench.data.preprocess import PixelTransform
from simclip_bench.data.unreadable import describe
from simclip_bench.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
LIST_SUFFIXES = (".csv", ".jsonl")


@dataclass
class LoadedImage:
    """One image in [0,1] (3, H, W), or ``None`` with ``error`` when it could not be read."""

    image: torch.Tensor | None
    label: int
    error: str | None = None


def read_image(path: str | Path, transform: PixelTransform, label: int) -> LoadedImage:
    try:
        return LoadedImage(transform(read_rgb(path)), label)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable", counted by the caller
        return LoadedImage(None, label, describe(str(path), e))


class FileImageDataset:
    """A map-style dataset of image files with integer labels (-1: unlabelled)."""

    def __init__(self, name: str, paths: Sequence[str], labels: Sequence[int], classnames: Sequence[str] | None,
                 transform: PixelTransform) -> None:
        if not paths:
            raise UserError(f"no images found in {name}")
        self.name = name
        self.paths = list(paths)
        self.labels = list(labels)
        self.classnames = tuple(classnames) if classnames else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedImage:
        return read_image(self.paths[index], self.transform, self.labels[index])


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_folder(root: Path, transform: PixelTransform, split: str = "train") -> FileImageDataset:
    """``root/<class>/*`` (or ``root/<split>/<class>/*`` for the ImageNet layout), classes in sorted order."""
    root = Path(root)
    if (root / split).is_dir():
        root = root / split
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class folders; an ImageFolder directory holds one folder of images per class")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, files in os.walk(root / cls, followlinks=True):
            for f in sorted(files):
                if _is_image(f):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(label)
    return FileImageDataset(str(root), paths, labels, classes, transform)


def _text(path: Path) -> str:
    """The list file as text: UTF-8, a leading byte-order mark (as spreadsheets write it) dropped."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save the list as UTF-8") from None


def _rows(path: Path) -> list[tuple[int, dict]]:
    """The rows of a list file with their line numbers (1-based; a CSV's header is line 1)."""
    text = _text(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num} is not readable CSV ({e})") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n} is not a JSON object ({e.msg})") from None
                except (RecursionError, ValueError) as e:  # [[[[... or a number of 5000 digits
                    why = "nested too deeply" if isinstance(e, RecursionError) else "a number with too many digits"
                    raise UserError(f"{path}:{n} is not a JSON object ({why})") from None
    if rows and not all(isinstance(r, dict) and r.get("path") for _, r in rows):
        raise UserError(f"{path}: every row needs a 'path' (optional 'label'), e.g. a CSV header 'path,label'")
    return rows


# Not str.isdigit() ("²" is a digit that int() refuses); at most 18 digits (int() refuses 4300).
_INT_LABEL = re.compile(r"\s*-?[0-9]{1,18}\s*", re.ASCII)


def _is_int_label(value: object) -> bool:
    """Whether a label is an integer: a JSON number or ASCII digits (JSON true/false are names, not 1/0)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and _INT_LABEL.fullmatch(value) is not None)


def list_file(path: Path, transform: PixelTransform) -> FileImageDataset:
    """A CSV / JSONL list of image paths with optional labels (class names or integers).

    Relative paths are read from the list's folder and refused (UserError naming the line) when they
    resolve outside it; absolute paths are taken as given.
    """
    path = Path(path)
    numbered = _rows(path)
    folder = ManifestFolder(path, path.parent, allow_absolute=True)
    paths = [str(folder.path(str(r["path"]), f"line {n}")) for n, r in numbered]
    raw = [r.get("label") for _, r in numbered]
    if all(v is None or v == "" for v in raw):
        return FileImageDataset(str(path), paths, [-1] * len(paths), None, transform)
    if any(v is None or v == "" for v in raw):
        raise UserError(f"{path}: some rows have a label and some do not; label all rows or none")
    if all(_is_int_label(v) for v in raw):
        labels = [int(v) for v in raw]
        if min(labels) < 0:
            raise UserError(f"{path}: integer labels must be >= 0")
        return FileImageDataset(str(path), paths, labels, None, transform)
    classes = sorted({str(v) for v in raw})
    index = {c: i for i, c in enumerate(classes)}
    return FileImageDataset(str(path), paths, [index[str(v)] for v in raw], classes, transform)


def read_class_names(path: Path, n_classes: int | None) -> tuple[str, ...]:
    """Class names, one per line in label order (e.g. the readable names of ImageNet's sorted wnids)."""
    try:
        names = tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as e:
        raise UserError(f"--class-names: cannot read {path}: {e.strerror}") from None
    if n_classes is not None and len(names) < n_classes:
        raise UserError(f"--class-names: {path} has {len(names)} names but the data has {n_classes} classes")
    return names
