"""A CLIP model that takes images in [0,1] pixel space.

Normalisation (mean/std of the model's preprocessing) lives inside the wrapper, so every attack
perturbs raw pixels and every eps is in pixel units.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PixelSpaceEncoder(nn.Module):
    """Vision tower ``f``: images (B, 3, H, W) in [0,1] -> embeddings (B, D), not normalised."""

    def __init__(self, visual: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual((images - self.mean) / self.std)


class PixelSpaceCLIP(nn.Module):
    """An open_clip CLIP with both towers, images in [0,1].

    Args:
        clip: an open_clip ``CLIP`` (or ``CustomTextCLIP``) model.
        tokenizer: the open_clip tokenizer for its text tower.
        mean, std: the image normalisation of the model's preprocessing.
        image_size: input side length in pixels.
    """

    def __init__(self, clip: nn.Module, tokenizer: Callable, mean: Sequence[float], std: Sequence[float],
                 image_size: int) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.encoder = PixelSpaceEncoder(clip.visual, mean, std)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        z = self.encoder(images)
        return F.normalize(z, dim=-1) if normalize else z

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.clip.encode_text(tokens, normalize=normalize)
