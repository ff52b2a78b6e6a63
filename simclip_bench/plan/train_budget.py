"""What one training step costs per image, read from the objective itself.

Per image and optimizer step (:meth:`simclip_bench.train.session.TrainSession.step`): the inner PGD's
``attack_steps`` gradient evaluations (input gradients, the weights untouched), the objective's extra forward
passes (``views``: e.g. the frozen original encoder on the clean image for the anchored objectives), and the
training forward and backward on the objective's ``loss_inputs`` (1 for most objectives, 2 for Sim-CLIP's
symmetric loss on the clean and the adversarial view). So ``steps x batch x (attack steps + 1 + extra forward
passes)`` in the common case.

The extra passes are not written down per objective: :func:`objective_passes` calls the objective's ``views`` and
``loss_inputs`` on a 2-image stand-in with counting stand-in encoders, so a new objective is counted as it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from simclip_bench.train.objectives import get_objective


@dataclass(frozen=True)
class StepBudget:
    """Per image and optimizer step: input-gradient passes (PGD), forward-only passes (views), training passes
    (forward and backward with weight gradients), and whether a frozen copy of the encoder is kept."""

    pgd_grad_evals: int
    view_forwards: float
    train_passes: float
    needs_original: bool

    @property
    def grad_evals(self) -> float:
        """Gradient evaluations per image and step: PGD's plus the training passes."""
        return self.pgd_grad_evals + self.train_passes


class _Counting(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.images = 0
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return torch.randn(len(x), self.dim, generator=torch.Generator().manual_seed(self.images))


def objective_passes(objective: str, anchor_weight: float, predictor: bool, attack_loss: str | None,
                     attack_steps: int) -> StepBudget:
    """Count the passes of ``objective`` (as ``simclip train --objective`` names it) per image and step."""
    obj = get_objective(objective, anchor_weight, predictor, attack_loss)
    encoder, original = _Counting(), _Counting()
    if obj.needs_labels:
        obj.setup(lambda texts: torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(0)), ["a", "b"])
    x = torch.zeros(2, 3, 4, 4)
    with torch.no_grad():
        obj.views(encoder, original if obj.needs_original else None, x, torch.tensor([0, 1]))
        inputs = obj.loss_inputs(x, x)
    return StepBudget(attack_steps, (encoder.images + original.images) / len(x), len(inputs) / len(x),
                      obj.needs_original)
