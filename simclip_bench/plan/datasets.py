"""How many images and classes a ``--dataset`` has, known without building it.

CLIP_benchmark datasets are read with ``split="test"`` (:func:`simclip_bench.data.catalog.clip_benchmark_source`);
their sizes come from :data:`CLIP_BENCHMARK_SPLITS`, which cites where each number is stated. Three have no test
split in CLIP_benchmark's builder (``caltech101``, ``sun397``, ``eurosat``: it warns "split argument ignored" and
reads the whole dataset), so their size is the whole dataset's. The number of templates is that of CLIP_benchmark's
English zero-shot templates (``en_zeroshot_classification_templates.json``; the ImageNet variants use ImageNet's 80).
The built-in ``shapes`` is asked directly, and an image folder is counted (class folders, image files) without
reading an image.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from simclip_bench.data.catalog import BUILTIN, CLIP_BENCHMARK_DATASETS, check_name, expand
from simclip_bench.data.files import IMAGE_EXTENSIONS

CLIP_PAPER = "Radford et al. 2021 (CLIP), Table 9"
# Rendering one built-in shapes image of side px costs about BASE + PER_PIXEL * px^2 seconds of host CPU, once per
# process (the split is rendered whole at first use and cached): calibrated on the development CPU, 1 thread
# (benchmarks/plan_vs_measured.py; benchmarks/RESULTS.md, "Cost plan").
SHAPES_RENDER_BASE_SECONDS = 0.45e-3
SHAPES_RENDER_SECONDS_PER_PIXEL = 2.7e-7


def shapes_render_seconds(n_images: int, image_size: int) -> float:
    """Host seconds to render ``n_images`` built-in shapes images at ``image_size`` pixels."""
    return n_images * (SHAPES_RENDER_BASE_SECONDS + SHAPES_RENDER_SECONDS_PER_PIXEL * image_size ** 2)


@dataclass(frozen=True)
class KnownSplit:
    """Images of the split read, classes, and where the number of images is stated."""

    images: int
    classes: int
    source: str


CLIP_BENCHMARK_SPLITS: dict[str, KnownSplit] = {
    "cifar10": KnownSplit(10_000, 10, CLIP_PAPER),
    "cifar100": KnownSplit(10_000, 100, CLIP_PAPER),
    "stl10": KnownSplit(8_000, 10, CLIP_PAPER),
    "caltech101": KnownSplit(9_145, 102, "whole dataset (no test split in CLIP_benchmark): torchvision's 8 677 "
                                         "images plus the 468 of BACKGROUND_Google, which CLIP_benchmark's "
                                         "caltech101.py keeps as a class"),
    "pets": KnownSplit(3_669, 37, CLIP_PAPER),
    "flowers": KnownSplit(6_149, 102, CLIP_PAPER),
    "dtd": KnownSplit(1_880, 47, CLIP_PAPER),
    "eurosat": KnownSplit(27_000, 10, "whole dataset (no test split in CLIP_benchmark), Helber et al. 2019"),
    "fgvc_aircraft": KnownSplit(3_333, 100, CLIP_PAPER),
    "cars": KnownSplit(8_041, 196, CLIP_PAPER),
    "pcam": KnownSplit(32_768, 2, CLIP_PAPER),
    "imagenet-r": KnownSplit(30_000, 200, "Hendrycks et al. 2021 (ImageNet-R)"),
    "imagenet_sketch": KnownSplit(50_889, 1000, "Wang et al. 2019 (ImageNet-Sketch)"),
    "imagenet1k": KnownSplit(50_000, 1000, f"{CLIP_PAPER} (the validation set)"),
    "imagenetv2": KnownSplit(10_000, 1000, "Recht et al. 2019 (matched frequency)"),
    "imagenet-a": KnownSplit(7_500, 200, "Hendrycks et al. 2021 (ImageNet-A)"),
    "imagenet-o": KnownSplit(2_000, 200, "Hendrycks et al. 2021 (ImageNet-O)"),
    "food101": KnownSplit(25_250, 101, CLIP_PAPER),
    "sun397": KnownSplit(108_754, 397, "whole dataset (no test split in CLIP_benchmark), Xiao et al. 2010"),
    "mnist": KnownSplit(10_000, 10, CLIP_PAPER),
    "gtsrb": KnownSplit(12_630, 43, CLIP_PAPER),
    "country211": KnownSplit(21_100, 211, CLIP_PAPER),
    "renderedsst2": KnownSplit(1_821, 2, CLIP_PAPER),
    "objectnet": KnownSplit(18_574, 113, "Barbu et al. 2019, the 113 classes shared with ImageNet"),
}
IMAGENET_VARIANTS = ("imagenet1k", "imagenetv2", "imagenet-r", "imagenet-a", "imagenet-o", "imagenet_sketch",
                     "objectnet")


@dataclass(frozen=True)
class DatasetExtent:
    """One expanded ``--dataset``: its images, classes and templates, and where the numbers come from."""

    name: str
    images: int
    classes: int
    templates: int
    source: str


def _templates(name: str) -> int:
    try:
        text = resources.files("clip_benchmark.datasets").joinpath("en_zeroshot_classification_templates.json")
        table = json.loads(text.read_text())
    except (ModuleNotFoundError, OSError, ValueError):
        return 1
    key = "imagenet1k" if name in IMAGENET_VARIANTS else name
    return len(table.get(key, [""]))


def _folder(path: Path) -> DatasetExtent:
    classes = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    images = sum(1 for d in classes for _, _, files in os.walk(d) for f in files
                 if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    templates = path / "templates.txt"
    n_templates = len([t for t in templates.read_text().splitlines() if t.strip()]) if templates.is_file() else 1
    return DatasetExtent(str(path), images, len(classes), n_templates, "counted (class folders and image files)")


def dataset_extents(values: list[str]) -> list[DatasetExtent]:
    """The extent of every dataset ``values`` name (collections expanded), without building any."""
    out = []
    for name in expand(values):
        check_name(name)
        if name == BUILTIN:
            from simclip_bench.data.classification import ShapesSource

            shapes = ShapesSource()
            out.append(DatasetExtent(name, len(shapes), len(shapes.classnames), len(shapes.templates), "built-in"))
        elif name in CLIP_BENCHMARK_DATASETS:
            split = CLIP_BENCHMARK_SPLITS[name]
            out.append(DatasetExtent(name, split.images, split.classes, _templates(name), split.source))
        else:
            out.append(_folder(Path(name)))
    return out
