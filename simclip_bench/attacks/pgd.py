"""Projected gradient descent, l-inf (Madry et al., ICLR 2018).

Defaults follow the Sim-CLIP / FARE training recipe: 10 steps of 1/255 from a uniform random start.
"""
from __future__ import annotations

import torch

from simclip_bench.attacks.base import AttackObjective, AttackResult, loss_and_grad, project_linf


def pgd_linf(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int = 10,
             step_size: float = 1 / 255, random_start: bool = True,
             generator: torch.Generator | None = None) -> AttackResult:
    """Maximise ``objective`` within the l-inf ball of radius ``eps`` (pixel units) around ``x``.

    Args:
        objective: maps images in [0,1] to (loss per sample, success per sample).
        x: clean images (B, 3, H, W) in [0,1].
        eps: l-inf radius in pixel units, e.g. 4/255.
        n_iter: number of signed-gradient steps (default 10).
        step_size: step in pixel units (default 1/255).
        random_start: start from uniform noise in [-eps, eps] (default True), as in the papers.

    Returns the last iterate (training uses it as the adversarial view).
    """
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        x_adv = torch.clamp(x + eps * noise, 0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(n_iter):
        _, _, grad = loss_and_grad(objective, x_adv)
        x_adv = project_linf(x_adv + step_size * grad.sign(), x, eps)
    with torch.no_grad():
        loss, success = objective(x_adv)
    return AttackResult(x_adv=x_adv.detach(), success=success.detach(), loss=loss.detach())
