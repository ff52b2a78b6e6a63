"""Test helper: an ImageFolder of generated shapes, for the dataset and benchmark tests."""
from pathlib import Path

from PIL import Image

from simclip_bench.data.shapes import SHAPES, ShapesDataset


def write_shapes_folder(root: Path, per_class: int = 3, size: int = 40) -> Path:
    """An ImageFolder of generated shapes: root/<shape>/<n>.png (size px, so the model must resize)."""
    data = ShapesDataset("val", size=200, image_size=size)
    images, labels = data.arrays()
    counts = dict.fromkeys(range(len(SHAPES)), 0)
    for image, label in zip(images, labels, strict=True):
        if counts[int(label)] < per_class:
            folder = root / SHAPES[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{counts[int(label)]}.png")
            counts[int(label)] += 1
    return root
