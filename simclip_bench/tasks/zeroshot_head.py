"""The zero-shot classifier: class names x templates through the text tower, computed once."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.data.classification import format_template
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.models.pixel_clip import PixelSpaceCLIP

LOGIT_SCALE = 100.0  # CLIP's zero-shot scale, as in CLIP_benchmark and RobustVLM


@torch.no_grad()
def build_text_classifier(model: PixelSpaceCLIP, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Unit-norm class embeddings (C, D): mean over templates of the normalised text embeddings.

    Templates hold the class name as ``{c}`` (CLIP_benchmark) or ``{}`` (CLIP)."""
    weights = []
    for name in classnames:
        emb = model.encode_text([format_template(t, name) for t in templates], normalize=True)
        weights.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(weights)


class ZeroShotClassifier(nn.Module):
    """``logits = 100 * norm(f(x)) @ W.T`` for images in [0,1]; the text weights are fixed."""

    def __init__(self, encoder: nn.Module, text_weights: torch.Tensor, logit_scale: float = LOGIT_SCALE) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("text_weights", text_weights.detach().float(), persistent=False)
        self.logit_scale = logit_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.encoder(images).float(), dim=-1)
        return self.logit_scale * z @ self.text_weights.T


@torch.no_grad()
def zero_shot_accuracy(model: PixelSpaceCLIP, dataset: ShapesDataset, batch_size: int = 500) -> float:
    """Clean zero-shot accuracy (fraction in [0,1]) of ``model`` on ``dataset``."""
    model.eval()
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, dataset.classnames, dataset.templates))
    x, y = dataset.tensors()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (head(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)
