"""Samples of the captioning and VQA tasks, and the built-in generated ones.

A :class:`VLMSample` is an image (a file or an in-memory array), an optional question and its references
(captioning: the reference captions; VQA: the human answers). The built-in sets come from the generated
shapes test split: captioning uses the five captions of test image i; VQA asks test image i its
question ``i mod 6`` (shape, colour, size, position, background, yes/no), so every kind of question is
asked equally often. A generated question has one answer; it is given as ten identical human answers,
so VQA accuracy is exactly 1 for the right answer (after the official normalisation) and 0 otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simclip_bench.data.image_io import ImageReadError, read_rgb, square_tensor
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.errors import UserError

HUMANS_PER_QUESTION = 10


@dataclass(frozen=True)
class VLMSample:
    """One captioning, VQA, POPE or ScienceQA item. ``image`` is a file path or a uint8 (H, W, 3) array;
    ``references`` the captions, human answers, POPE label (``yes``/``no``) or right option's letter;
    ``choices`` the options of a multiple-choice question, in letter order."""

    sample_id: str
    image: Path | np.ndarray
    references: tuple[str, ...]
    question: str | None = None
    choices: tuple[str, ...] = ()


@dataclass
class VLMDataset:
    """An evaluation set of one task. ``stop_below``: the ensemble stops attacking a sample scoring below it (or 0).

    ``source`` says where the samples were read (the resolved folder, or ``generated``) and ``fingerprint``
    is a hash of what was read there (annotation files' contents, the image listing): both enter the
    identity of every stored row, so two folders with one name never share rows.
    """

    name: str
    split: str
    task: str
    samples: list[VLMSample]
    stop_below: float
    source: str = "generated"
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def data_id(self) -> str:
        """The data part of every stored row's key (:mod:`simclip_bench.results.identity`): the dataset as read,
        before any subset is drawn (``subset`` keeps it)."""
        from simclip_bench.data.fingerprint import data_id

        return data_id({"name": self.name, "split": self.split, "task": self.task, "source": self.source,
                        "fingerprint": self.fingerprint})

    def subset(self, n: int, seed: int = 0) -> VLMDataset:
        """A fixed subset of ``n`` samples: the first n for the built-in data, a seeded draw (kept in
        dataset order) for files, so every model sees the same samples."""
        if n > len(self.samples):
            raise UserError(f"--n-samples {n} exceeds the {len(self.samples)} samples of {self.name}")
        if self.name == "shapes" or n == len(self.samples):
            chosen = list(range(n))
        else:
            chosen = sorted(np.random.default_rng(seed).choice(len(self.samples), size=n, replace=False).tolist())
        return VLMDataset(self.name, self.split, self.task, [self.samples[i] for i in chosen], self.stop_below,
                          self.source, self.fingerprint)

    def images(self, size: int, positions: Sequence[int] | None = None,
               pad_fill: tuple[int, int, int] | None = None) -> torch.Tensor:
        """The images (all, or those at ``positions``) as (N, 3, size, size) in [0,1]: shorter side resized to
        ``size``, centre-cropped; with ``pad_fill``, first padded to a square with that colour (LLaVA)."""
        chosen = self.samples if positions is None else [self.samples[p] for p in positions]
        return torch.stack([load_image(s.image, size, pad_fill) for s in chosen])


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """LLaVA's ``expand2square`` (``llava/mm_utils.py``): the image pasted centred (offset rounded down) on a
    square of side max(width, height) filled with ``fill``; a square image is returned as it is."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def load_image(image: Path | np.ndarray, size: int, pad_fill: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(3, size, size) in [0,1] from a file (see :func:`~simclip_bench.data.image_io.read_rgb`) or a uint8 array
    (bicubic resize of the shorter side, centre crop; with ``pad_fill``, padded to a square first)."""
    if isinstance(image, np.ndarray):
        im = Image.fromarray(image)
    else:
        try:
            im = read_rgb(image)
        except FileNotFoundError:
            raise UserError(f"image file {image} is missing") from None
        except ImageReadError as e:
            raise UserError(f"image file {image}: {e}") from None
        except OSError as e:
            raise UserError(f"image file {image} is not a readable image ({e.__class__.__name__})") from None
    return square_tensor(im if pad_fill is None else expand_to_square(im, pad_fill), size)


# RobustVLM stops attacking a caption below CIDEr 10 (printed scale) on COCO; the generated data uses the same.
SHAPES_CAPTION_STOP_BELOW = 0.10


def shapes_captioning(n: int, seed: int = 0) -> VLMDataset:
    """The first ``n`` generated test images with their five captions."""
    data = ShapesDataset("test", seed=seed)
    _check_n(n, len(data))
    samples = [VLMSample(data.sample_id(i), data.sample(i).image, data.sample(i).captions) for i in range(n)]
    return VLMDataset("shapes", "test", "captioning", samples, SHAPES_CAPTION_STOP_BELOW,
                      source=f"generated:shapes/test (seed {seed})")


def shapes_vqa(n: int, seed: int = 0) -> VLMDataset:
    """The first ``n`` generated test images, image i asked its question i mod 6."""
    data = ShapesDataset("test", seed=seed)
    _check_n(n, len(data))
    samples = []
    for i in range(n):
        s = data.sample(i)
        question, answer = s.qa[i % len(s.qa)]
        samples.append(VLMSample(f"{data.sample_id(i)}/q{i % len(s.qa)}", s.image, (answer,) * HUMANS_PER_QUESTION,
                                 question))
    return VLMDataset("shapes", "test", "vqa", samples, 0.0, source=f"generated:shapes/test (seed {seed})")


def _check_n(n: int, available: int) -> None:
    if n <= 0:
        raise UserError(f"--n-samples must be a positive integer, got {n}")
    if n > available:
        raise UserError(f"--n-samples {n} exceeds the {available} generated test images")


def references(dataset: VLMDataset) -> list[Sequence[str]]:
    return [s.references for s in dataset.samples]
