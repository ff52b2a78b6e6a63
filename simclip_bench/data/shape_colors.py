"""The many-class built-in task: the generated shapes labelled by shape *and* colour (8 x 8 = 64 classes).

The images are those of :mod:`simclip_bench.data.shapes` (the same generator, seed and split: sample ``i``
of ``shape-colors`` is pixel for pixel sample ``i`` of ``shapes``); only the label changes. Class
``shape_index * 8 + colour_index`` is named ``"<colour> <shape>"`` (``"red circle"``), the words the
built-in tiny CLIP saw in its pretraining captions (``"a photo of a red circle."``), so zero-shot works on
it. Colours are drawn uniformly and independently of the shape, so the 64 classes are equally likely.

Why it exists: ``shapes`` has 8 classes, too few to show what a protocol that picks a few target classes
(``--protocol fast``: 2 of the 9 most likely) misses when most classes are never considered. 64 classes
put the 9 candidates among many, as ImageNet's 1 000 do.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from simclip_bench.data.shapes import COLORS, DEFAULT_IMAGE_SIZE, SHAPES, ShapesDataset, generate_sample

NAME = "shape-colors"
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
CLASSNAMES: tuple[str, ...] = tuple(f"{color} {shape}" for shape in SHAPES for color in COLOR_NAMES)
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "an image of a {}.",
    "a {} shape.",
)


def shape_color_label(shape: str, color: str) -> int:
    """The class of a sample: ``shape_index * 8 + colour_index``."""
    return SHAPES.index(shape) * len(COLOR_NAMES) + COLOR_NAMES.index(color)


@lru_cache(maxsize=8)
def _render(seed: int, split: str, count: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    samples = [generate_sample(seed, split, i, image_size) for i in range(count)]
    images = np.stack([s.image for s in samples])
    labels = np.asarray([shape_color_label(s.shape, s.color) for s in samples], dtype=np.int64)
    return images, labels


class ShapeColorsDataset(ShapesDataset):
    """A split of the generated shapes with shape x colour labels (64 classes); arguments as
    :class:`~simclip_bench.data.shapes.ShapesDataset`."""

    name = NAME
    classnames: tuple[str, ...] = CLASSNAMES
    templates: tuple[str, ...] = TEMPLATES

    def __init__(self, split: str = "test", seed: int = 0, size: int | None = None,
                 image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        super().__init__(split, seed, size, image_size)

    def sample_id(self, index: int) -> str:
        return f"{NAME}/{self.split}/{index:06d}"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images (N, H, W, 3) uint8 and shape x colour labels (N,), rendered once and cached."""
        return _render(self.seed, self.split, self.size, self.image_size)
