"""The model's own open_clip preprocessing, minus normalisation (which lives inside the model wrapper).

Training and evaluation feed images in [0,1] pixel space; open_clip's eval transform (resize of the
shorter side with the model's interpolation, centre crop, RGB, to tensor) is used as is, and its final
``Normalize`` is dropped, since :class:`simclip_bench.models.pixel_clip.PixelSpaceEncoder` applies the
model's mean and std itself.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.transforms import Compose, Normalize

PixelTransform = Callable[[Image.Image], torch.Tensor]


def pixel_transform(preprocess_cfg: dict) -> PixelTransform:
    """open_clip's eval transform for ``visual.preprocess_cfg`` without ``Normalize``: PIL -> (3, H, W) in [0,1]."""
    cfg = PreprocessCfg(**{k: v for k, v in preprocess_cfg.items() if k in PreprocessCfg.__dataclass_fields__})
    full = image_transform_v2(cfg, is_train=False)
    steps = [t for t in full.transforms if not isinstance(t, Normalize)]
    return Compose(steps)
