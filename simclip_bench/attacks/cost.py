"""What an attack cost: gradient evaluations per sample, counted where they happen.

A *gradient evaluation* is one forward and backward pass of one sample through the model, the unit in
which AutoAttack's and APGD's budgets are stated (APGD-CE at 100 iterations on a sample that is never
fooled: 1 at the start + 100). Forward-only queries (Square, the float32 confirmation of a success,
clean predictions) are not gradient evaluations and are not counted.

:class:`CountedObjective` wraps any attack objective and adds 1 to a sample's count each time the
objective is evaluated on it with the input requiring a gradient, so the count is per sample and the
same whatever the working batch. :class:`CountedModule` counts a whole model's gradient forwards, for
code that does not go through an objective (the reference implementation): the total divided by the
number of samples is the mean per sample.
"""
from __future__ import annotations

import torch
from torch import nn


class CountedObjective:
    """``objective`` that adds 1 to ``counts[idx]`` for every sample of a gradient evaluation.

    ``counts`` (N,) float64 on the objective's device, shared between the attacks of one ensemble so that
    they add up. Every other attribute (``confirm`` among them) is the wrapped objective's.
    """

    def __init__(self, objective, counts: torch.Tensor) -> None:
        self.objective = objective
        self.counts = counts

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x_adv.requires_grad and torch.is_grad_enabled():
            self.counts.index_add_(0, idx.to(self.counts.device),
                                   torch.ones(len(idx), dtype=self.counts.dtype, device=self.counts.device))
        return self.objective(x_adv, idx)

    def __getattr__(self, name: str):
        return getattr(self.objective, name)


class CountedModule(nn.Module):
    """``model`` that counts the samples of every forward pass whose input requires a gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gradient_samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            self.gradient_samples += len(x)
        return self.model(x)
