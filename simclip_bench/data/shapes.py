"""The built-in generated dataset: coloured shapes on varied backgrounds.

Every sample is a pure function of ``(seed, split, index)``, so splits are
deterministic, disjoint and need no files on disk. Each sample carries:

* ``label``: the shape class (zero-shot classification target);
* ``captions``: five reference captions (captioning);
* ``qa``: question/answer pairs (VQA).

The images vary in background (plain, gradient, stripes, checks, clouds),
shape colour, size, position, slight rotation, distractor dots and pixel noise,
so a model has to learn shape, not a shortcut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "ring", "square", "triangle", "star", "cross", "diamond", "crescent")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "striped", "checkered", "cloudy")
POSITIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 20000, "val": 1000, "test": 1000}
DEFAULT_IMAGE_SIZE = 32
SUPERSAMPLE = 4

ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {} shape.",
    "an image of a {}.",
    "a drawing of a {}.",
)


@dataclass(frozen=True)
class ShapeSample:
    """One generated image with everything the tasks need.

    ``image`` is uint8, shape (H, W, 3). ``sample_id`` is stable across runs,
    e.g. ``"shapes/test/000042"``.
    """

    sample_id: str
    image: np.ndarray
    label: int
    shape: str
    color: str
    size: str
    position: str
    background: str
    captions: tuple[str, ...]
    qa: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _polygon(n: int, radius: float, phase: float, inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices of a regular polygon (or a star when ``inner`` is given), unit-centred."""
    pts = []
    steps = n * 2 if inner is not None else n
    for k in range(steps):
        r = radius if inner is None or k % 2 == 0 else radius * inner
        a = phase + 2 * math.pi * k / steps
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _draw_shape_mask(shape: str, size_px: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased alpha mask in [0,1] of one shape, shape (size_px, size_px)."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (size_px * s, size_px * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * s, cy * s, radius * s

    def place(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ri = r * 0.55
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    elif shape == "square":
        h = r * 0.82
        draw.polygon(place([(-h, -h), (h, -h), (h, h), (-h, h)]), fill=255)
    elif shape == "diamond":
        draw.polygon(place([(0, -r), (r * 0.75, 0), (0, r), (-r * 0.75, 0)]), fill=255)
    elif shape == "triangle":
        draw.polygon(place(_polygon(3, r, -math.pi / 2)), fill=255)
    elif shape == "star":
        draw.polygon(place(_polygon(5, r, -math.pi / 2, inner=0.42)), fill=255)
    elif shape == "cross":
        w = r * 0.34
        draw.polygon(place([(-w, -r), (w, -r), (w, r), (-w, r)]), fill=255)
        draw.polygon(place([(-r, -w), (r, -w), (r, w), (-r, w)]), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox, oy = place([(r * 0.45, -r * 0.1)])[0]
        ri = r * 0.8
        draw.ellipse((ox - ri, oy - ri, ox + ri, oy + ri), fill=0)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    small = canvas.resize((size_px, size_px), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, kind: str, n: int, avoid: np.ndarray) -> np.ndarray:
    """A float32 (n, n, 3) background in [0,1] whose colours stay away from ``avoid``."""

    def colour() -> np.ndarray:
        for _ in range(20):
            c = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            if np.abs(c - avoid).sum() > 0.6:
                return c
        return 1.0 - avoid

    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / max(n - 1, 1)
    c1, c2 = colour(), colour()
    if kind == "plain":
        return np.broadcast_to(c1, (n, n, 3)).copy()
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return c1 * (1 - t[..., None]) + c2 * t[..., None]
    if kind == "striped":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.12, 0.3)
        t = ((xx * math.cos(a) + yy * math.sin(a)) / period) % 1.0 < 0.5
        return np.where(t[..., None], c1, c2)
    if kind == "checkered":
        cells = int(rng.integers(3, 7))
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(bool)
        return np.where(t[..., None], c1, c2)
    if kind == "cloudy":
        coarse = rng.uniform(0, 1, size=(4, 4)).astype(np.float32)
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((n, n), Image.BICUBIC)
        t = np.asarray(img, dtype=np.float32) / 255.0
        return c1 * (1 - t[..., None]) + c2 * t[..., None]
    raise ValueError(kind)  # pragma: no cover


def _captions(size: str, color: str, shape: str, background: str, position: str) -> tuple[str, ...]:
    return (
        f"a {size} {color} {shape} on a {background} background.",
        f"a photo of a {color} {shape}.",
        f"a {color} {shape} in the {position}.",
        f"there is a {size} {shape} on a {background} background.",
        f"a drawing of a {size} {color} {shape} in the {position}.",
    )


def _qa(rng: np.random.Generator, size: str, color: str, shape: str, background: str, position: str):
    other = SHAPES[(SHAPES.index(shape) + int(rng.integers(1, len(SHAPES)))) % len(SHAPES)]
    asked = shape if rng.random() < 0.5 else other
    return (
        ("what shape is in the image?", shape),
        ("what color is the shape?", color),
        ("is the shape large or small?", size),
        ("where is the shape?", position),
        ("what is the background like?", background),
        (f"is there a {asked} in the image?", "yes" if asked == shape else "no"),
    )


def generate_sample(seed: int, split: str, index: int, image_size: int = DEFAULT_IMAGE_SIZE) -> ShapeSample:
    """Render sample ``index`` of ``split`` deterministically from ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    n = image_size
    label = int(rng.integers(len(SHAPES)))
    shape = SHAPES[label]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    large = bool(rng.random() < 0.5)
    radius = n * (rng.uniform(0.30, 0.42) if large else rng.uniform(0.18, 0.27))
    margin = radius + 1
    cx = rng.uniform(margin, n - margin)
    cy = rng.uniform(margin, n - margin)
    angle = math.radians(rng.uniform(-12, 12))

    base = np.asarray(COLORS[color], dtype=np.float32) / 255.0
    fg = np.clip(base + rng.normal(0, 0.05, size=3).astype(np.float32), 0, 1)
    img = _background(rng, background, n, avoid=fg)
    for _ in range(int(rng.integers(0, 4))):  # distractor dots: small, never shape-sized
        dx, dy = rng.uniform(0, n, size=2)
        dr = rng.uniform(0.6, 1.4)
        dot = _draw_shape_mask("circle", n, dx, dy, dr, 0.0)[..., None]
        img = img * (1 - dot) + rng.uniform(0, 1, size=3).astype(np.float32) * dot
    mask = _draw_shape_mask(shape, n, cx, cy, radius, angle)[..., None]
    img = img * (1 - mask) + fg * mask
    img = img + rng.normal(0, rng.uniform(0.0, 0.06), size=img.shape).astype(np.float32)
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    col = min(int(cx / n * 3), 2)
    row = min(int(cy / n * 3), 2)
    position = POSITIONS[row][col]
    size = "large" if large else "small"
    return ShapeSample(
        sample_id=f"shapes/{split}/{index:06d}",
        image=image,
        label=label,
        shape=shape,
        color=color,
        size=size,
        position=position,
        background=background,
        captions=_captions(size, color, shape, background, position),
        qa=_qa(rng, size, color, shape, background, position),
    )


@lru_cache(maxsize=8)
def _render_split(seed: int, split: str, start: int, count: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    samples = [generate_sample(seed, split, start + i, image_size) for i in range(count)]
    images = np.stack([s.image for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    return images, labels


class ShapesDataset:
    """A split of the generated shapes data, indexable like a torch ``Dataset``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: generator seed (default 0); the same seed always gives the same images.
        size: number of samples (default: ``DEFAULT_SPLIT_SIZES[split]``).
        image_size: side length in pixels (default 32).
    """

    name = "shapes"
    classnames: tuple[str, ...] = SHAPES
    templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES

    def __init__(self, split: str = "test", seed: int = 0, size: int | None = None,
                 image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        self.split = split
        self.seed = seed
        self.size = DEFAULT_SPLIT_SIZES[split] if size is None else size
        self.image_size = image_size

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int) -> ShapeSample:
        """The full record of one sample (image, captions, QA...)."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        return generate_sample(self.seed, self.split, index, self.image_size)

    def sample_id(self, index: int) -> str:
        return f"shapes/{self.split}/{index:06d}"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images (N, H, W, 3) uint8 and labels (N,), rendered once and cached."""
        return _render_split(self.seed, self.split, 0, self.size, self.image_size)

    def tensors(self, indices: list[int] | None = None):
        """Images as float tensor (N, 3, H, W) in [0,1] and labels as int64 tensor."""
        import torch

        images, labels = self.arrays()
        if indices is not None:
            images, labels = images[indices], labels[indices]
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return x, torch.from_numpy(np.ascontiguousarray(labels))
