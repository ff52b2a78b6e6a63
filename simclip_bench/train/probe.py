"""The zero-shot probe: clean zero-shot accuracy of the encoder on held-out labelled images.

The text classifier (class names x templates through the frozen text tower) is built once; only the
vision tower changes during training.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from simclip_bench.models.pixel_clip import PixelSpaceCLIP
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

REAL_DATA_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


class ZeroShotProbe:
    def __init__(self, model: PixelSpaceCLIP, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                 templates: Sequence[str], batch_size: int = 250) -> None:
        self.images, self.labels = images, labels
        self.head = ZeroShotClassifier(model.encoder, build_text_classifier(model, classnames, templates))
        self.batch_size = batch_size
        self.chance = 1.0 / len(classnames)

    @torch.no_grad()
    def accuracy(self, autocast_ctx) -> float:
        encoder = self.head.encoder
        was_training = encoder.training
        encoder.eval()
        device = self.head.text_weights.device
        correct = 0
        for i in range(0, len(self.images), self.batch_size):
            x = self.images[i:i + self.batch_size].to(device)
            with autocast_ctx():
                logits = self.head(x)
            correct += int((logits.argmax(-1).cpu() == self.labels[i:i + self.batch_size]).sum())
        encoder.train(was_training)
        return correct / len(self.images)
