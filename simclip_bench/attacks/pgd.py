"""Projected gradient descent (Madry et al., ICLR 2018), l-inf or l2, any objective.

Defaults follow the Sim-CLIP / FARE training recipe: 10 steps of 1/255 from a uniform random start.
Training draws its random starts from the trainer's generator; evaluation uses APGD instead.
"""
from __future__ import annotations

import torch

from simclip_bench.attacks.base import AttackObjective, AttackResult, Norm, loss_and_grad, normalized_step, project
from simclip_bench.attacks.rng import sample_uniform


def pgd(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int = 10, step_size: float = 1 / 255,
        norm: Norm = "linf", random_start: bool = True, generator: torch.Generator | None = None,
        idx: torch.Tensor | None = None, seeds: torch.Tensor | None = None) -> AttackResult:
    """Maximise ``objective`` within the ``norm`` ball of radius ``eps`` (pixel units) around ``x``.

    Args:
        objective: maps (images in [0,1], sample indices) to (loss per sample, success per sample).
        x: clean images (B, C, H, W) in [0,1]; ``idx`` their sample indices (default ``arange(B)``).
        eps: radius in pixel units, e.g. 4/255.
        n_iter: number of steps (default 10).
        step_size: step length in pixel units (default 1/255): sign steps for l-inf, unit-l2 steps for l2.
        random_start: start from uniform noise in the ball (default True), as in the papers.
        generator / seeds: where the random start comes from: a generator (training), or one seed per
            sample (B,) so that each sample's start depends on it alone (evaluation).

    Returns the last iterate (training uses it as the adversarial view).
    """
    x = x.detach()
    idx = torch.arange(len(x), device=x.device) if idx is None else idx
    if random_start:
        if seeds is not None:
            noise = sample_uniform(seeds, 0, tuple(x.shape[1:]), x.device, x.dtype) * 2 - 1
        else:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        x_adv = project(x + eps * noise, x, eps, norm)
    else:
        x_adv = x.clone()
    for _ in range(n_iter):
        _, _, grad = loss_and_grad(objective, x_adv, idx)
        x_adv = project(x_adv + step_size * normalized_step(grad, norm), x, eps, norm)
    with torch.no_grad():
        loss, success = objective(x_adv, idx)
    return AttackResult(x_adv=x_adv.detach(), success=success.detach(), loss=loss.detach())


def pgd_linf(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int = 10, step_size: float = 1 / 255,
             random_start: bool = True, generator: torch.Generator | None = None) -> AttackResult:
    """l-inf PGD (the training attack of Sim-CLIP, FARE and TeCoA)."""
    return pgd(objective, x, eps, n_iter, step_size, "linf", random_start, generator)
