"""``--dataset`` values: names, named collections, folders; and where each dataset is looked for.

* ``shapes`` -- the built-in generated data (no files), 8 shape classes; ``shape-colors``: the same images
  with 64 shape x colour classes (:mod:`simclip_bench.data.shape_colors`);
* a CLIP_benchmark zero-shot dataset name (``cifar10``, ``imagenet1k``, ...), read from local files
  under ``--dataset-root`` with CLIP_benchmark's builder, class names and templates; the root may
  hold ``{dataset}``, replaced by the dataset name (CLIP_benchmark's convention);
* a named collection: ``robustvlm`` (the 13 datasets of the RobustVLM zero-shot table) or
  ``imagenet`` (ImageNet-1k validation);
* a path to an ImageFolder (see :func:`simclip_bench.data.classification.image_folder_source`).

Nothing is ever downloaded: a missing dataset is a one-line error saying where it was looked for
and how to get it.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.grid import unique_values

if TYPE_CHECKING:  # the sources import torch; the names above are read without it (simclip ls datasets, --help)
    from simclip_bench.data.classification import ClassificationSource, TorchDatasetSource

BUILTIN = "shapes"
MANY_CLASS_BUILTIN = "shape-colors"
BUILTINS: tuple[str, ...] = (BUILTIN, MANY_CLASS_BUILTIN)
ROBUSTVLM_DATASETS: tuple[str, ...] = (
    "cifar10", "cifar100", "stl10", "caltech101", "pets", "flowers", "dtd", "eurosat", "fgvc_aircraft", "cars",
    "pcam", "imagenet-r", "imagenet_sketch",
)
COLLECTIONS: dict[str, tuple[str, ...]] = {"robustvlm": ROBUSTVLM_DATASETS, "imagenet": ("imagenet1k",)}
OTHER_CLIP_BENCHMARK: tuple[str, ...] = (
    "imagenet1k", "imagenetv2", "imagenet-a", "imagenet-o", "food101", "sun397", "mnist", "gtsrb", "country211",
    "renderedsst2", "objectnet",
)
CLIP_BENCHMARK_DATASETS: tuple[str, ...] = ROBUSTVLM_DATASETS + OTHER_CLIP_BENCHMARK
DEFAULT_DATASET_ROOT = "datasets/{dataset}"

_TORCHVISION_HINT = ("download it where there is internet with: python -c \"from clip_benchmark.datasets.builder "
                     "import build_dataset; build_dataset('{name}', root='{root}', split='test', download=True)\"")
HOW_TO_GET: dict[str, str] = {
    "imagenet1k": "put ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz from image-net.org in {root} "
                  "(torchvision ImageNet layout)",
    "imagenet-r": "extract https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar so that {root}/n01443537/ "
                  "exists",
    "imagenet_sketch": "extract ImageNet-Sketch (github.com/HaohanWang/ImageNet-Sketch) so that {root}/n01440764/ "
                       "exists",
    "imagenet-a": "extract https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar so that {root}/n01498041/ "
                  "exists",
    "imagenet-o": "extract https://people.eecs.berkeley.edu/~hendrycks/imagenet-o.tar into {root}",
    "imagenetv2": "download ImageNetV2 matched-frequency into {root}",
    "objectnet": "download ObjectNet (objectnet.dev) into {root}",
}


def expand(names: list[str]) -> list[str]:
    """Collections replaced by their members, duplicates dropped (a folder written two ways too), order kept."""
    members = [member for name in names for member in COLLECTIONS.get(name, (name,))]
    return unique_values(members, known_names())


def dataset_root(template: str, name: str) -> Path:
    """The folder for dataset ``name``: ``template`` with ``{dataset}`` filled in (CLIP_benchmark convention)."""
    return Path(template.replace("{dataset}", name).replace("{dataset_cleaned}", name.replace("/", "-")))


def _is_dir(value: str) -> bool:
    """Whether ``value`` is an existing folder; a name too long to look up is not one (and no OSError)."""
    try:
        return Path(value).is_dir()
    except OSError:
        return False


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith(".") or _is_dir(value)


def known_names() -> list[str]:
    return [*BUILTINS, *COLLECTIONS, *CLIP_BENCHMARK_DATASETS]


def check_name(value: str) -> None:
    """Raise UserError for a value that is neither a known name nor a path."""
    if value in BUILTINS or value in CLIP_BENCHMARK_DATASETS or value in COLLECTIONS or _looks_like_path(value):
        return
    raise UserError(f"unknown dataset {value!r}{did_you_mean(value, known_names())}; choose one of "
                    f"{', '.join(BUILTINS)}, {', '.join(COLLECTIONS)}, a CLIP_benchmark name such as cifar10, or a "
                    "folder path")


def open_source(value: str, root_template: str = DEFAULT_DATASET_ROOT, workers: int = 0,
                seed: int = 0) -> ClassificationSource:
    """The source for one (expanded) ``--dataset`` value; fails with where it looked and how to get it."""
    from simclip_bench.data.classification import ShapesSource, image_folder_source

    check_name(value)
    if value in BUILTINS:
        return ShapesSource(seed=seed, many_classes=value == MANY_CLASS_BUILTIN)
    if value in CLIP_BENCHMARK_DATASETS:
        root = dataset_root(root_template, value)
        return _with_classes(clip_benchmark_source(value, root, workers), value, f"check the files under {root}")
    return _with_classes(image_folder_source(Path(value), workers=workers), value,
                         f"put each class's images in its own sub-folder of {value}")


MIN_CLASSES = 2


def _with_classes(source: ClassificationSource, value: str, fix: str) -> ClassificationSource:
    """``source``, refused when it has fewer than two classes: the zero-shot head would pick the one class
    for every image, so clean and robust accuracy would be a meaningless 100 %."""
    n = len(source.classnames)
    if n < MIN_CLASSES:
        only = f" ({source.classnames[0]!r})" if n else ""
        raise UserError(f"dataset {value} has {n} class{'' if n == 1 else 'es'}{only}; zero-shot accuracy needs at "
                        f"least {MIN_CLASSES} (with one, every prediction is right); {fix}")
    return source


def _how_to_get(name: str, root: Path) -> str:
    return HOW_TO_GET.get(name, _TORCHVISION_HINT).format(name=name, root=root)


def clip_benchmark_source(name: str, root: Path, workers: int = 0) -> TorchDatasetSource:
    """A CLIP_benchmark dataset from local files only (``download=False``), with its class names and templates."""
    if not root.is_dir() or not any(root.iterdir()):
        state = "does not exist" if not root.exists() else ("is empty" if root.is_dir() else "is not a folder")
        raise UserError(f"dataset {name} not found: {root} {state} (set --dataset-root, e.g. "
                        f"'/data/{{dataset}}'); to get it, {_how_to_get(name, root)}")
    from simclip_bench.data.classification import TorchDatasetSource
    from simclip_bench.data.image_io import read_rgb

    try:
        from clip_benchmark.datasets.builder import build_dataset
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise UserError(f"CLIP_benchmark datasets need clip_benchmark ({e}); pip install clip_benchmark") from None

    def build(transform):
        # The builder prints and warns about splits; keep the terminal for our own output.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                dataset = build_dataset(name, root=str(root), transform=transform, split="test", download=False)
            except (RuntimeError, FileNotFoundError, AssertionError, OSError, KeyError, IndexError) as e:
                detail = " ".join(str(e).split()) or type(e).__name__
                raise UserError(f"dataset {name} at {root} is incomplete or in the wrong layout ({detail}); "
                                f"to get it, {_how_to_get(name, root)}") from None
        if hasattr(dataset, "loader"):  # ImageFolder layouts (ImageNet and its variants): read as every image is
            dataset.loader = read_rgb
        return dataset

    probe = build(None)
    if len(probe) == 0:
        raise UserError(f"dataset {name} at {root} has no images; to get it, {_how_to_get(name, root)}")
    templates = probe.templates
    if isinstance(templates, dict):  # class-specific prompts (CuPL-style) are not part of the protocol
        raise UserError(f"dataset {name}: class-specific templates are not supported; use plain templates")
    return TorchDatasetSource(name, build, probe.classes, templates, root=root.resolve(), workers=workers,
                              index=probe, builder={"kind": "clip_benchmark", "name": name})
