"""The inner maximisation of adversarial training: l-inf PGD with a per-sample random start.

As in Sim-CLIP, FARE and TeCoA: ``n_iter`` (default 10) sign-gradient steps of ``step_size``
(default 1/255) from a uniform random start in the eps-ball, projected to the ball and to [0,1].
The random start of each image is a hash of (run seed, step, the image's position in the global
batch) (:mod:`simclip_bench.attacks.rng`), so it does not depend on how the batch is split over
micro-batches or processes, and a resumed run draws exactly the starts it would have drawn.
"""
from __future__ import annotations

import torch

from simclip_bench.attacks.base import AttackObjective, loss_and_grad, normalized_step, project
from simclip_bench.attacks.rng import sample_seeds, sample_uniform


def training_pgd(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int, step_size: float,
                 seed: int, step: int, positions: torch.Tensor) -> torch.Tensor:
    """Adversarial views of ``x`` (B,3,H,W in [0,1]) maximising ``objective``; ``positions``: global-batch indices."""
    x = x.detach()
    seeds = sample_seeds(seed, positions, salt=step + 1)
    noise = 2 * sample_uniform(seeds, 0, tuple(x.shape[1:]), x.device, x.dtype) - 1
    x_adv = project(x + eps * noise, x, eps, "linf")
    idx = torch.arange(len(x), device=x.device)
    for _ in range(n_iter):
        _, _, grad = loss_and_grad(objective, x_adv, idx)
        x_adv = project(x_adv + step_size * normalized_step(grad, "linf"), x, eps, "linf")
    return x_adv.detach()
