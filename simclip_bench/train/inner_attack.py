"""The inner maximisation of adversarial training: l-inf PGD with momentum and a per-sample random start.

The update is the one of RobustVLM's ``train/pgd_train.py`` (Schlarmann et al. 2024), which the released
Sim-CLIP code reuses unchanged. Each of ``n_iter`` steps (default 10):

* the gradient of the loss, NaN entries set to 0, is normalised (sign, for l-inf);
* it is added to a velocity kept with ``momentum`` (default 0.9), and the velocity is normalised again;
* the image moves ``step_size`` (default 1/255) along the velocity, is projected to the eps-ball around
  ``x`` and clipped to [0,1].

The last iterate is returned (no tracking of the best one). For l-inf, ``sign(m·sign(v) + sign(g))`` is
``sign(g)`` wherever ``g != 0`` (``m < 1``): momentum only changes coordinates whose gradient is exactly
zero, which keep moving the way they last moved instead of stopping. ``momentum=0`` gives plain
sign-gradient steps.

The start is ``x + δ`` with ``δ`` uniform in [-eps, eps], as the reference's caller draws it; like the
reference, the first gradient is taken there even where ``x + δ`` leaves [0,1] (``clip_start=True``
clips the start to [0,1] first, as simclip-bench did before the momentum update). ``δ`` of each image is
a hash of (run seed, step, the image's position in the global batch) (:mod:`simclip_bench.attacks.rng`),
so it does not depend on how the batch is split over micro-batches or processes, and a resumed run draws
exactly the starts it would have drawn.
"""
from __future__ import annotations

import torch

from simclip_bench.attacks.base import AttackObjective, loss_and_grad, normalized_step, project
from simclip_bench.attacks.rng import sample_seeds, sample_uniform

DEFAULT_MOMENTUM = 0.9


def check_momentum(momentum: float) -> None:
    """Raise ValueError unless ``momentum`` is a number in [0, 1)."""
    if not (0.0 <= momentum < 1.0):  # also false for NaN
        raise ValueError(f"must be a number in [0, 1), got {momentum}")


def start_perturbation(x: torch.Tensor, eps: float, seed: int, step: int, positions: torch.Tensor) -> torch.Tensor:
    """The random start ``δ`` (shape of ``x``), uniform in [-eps, eps]; row b depends on (seed, step, positions[b])."""
    seeds = sample_seeds(seed, positions, salt=step + 1)
    return eps * (2 * sample_uniform(seeds, 0, tuple(x.shape[1:]), x.device, x.dtype) - 1)


def training_pgd(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int, step_size: float,
                 seed: int, step: int, positions: torch.Tensor, momentum: float = DEFAULT_MOMENTUM,
                 clip_start: bool = False) -> torch.Tensor:
    """Adversarial views of ``x`` (B,3,H,W in [0,1]) maximising ``objective``; ``positions``: global-batch indices.

    ``eps`` and ``step_size`` in pixel units; ``momentum`` in [0, 1) (0: plain sign steps). The result is
    always inside the eps-ball and [0,1] (with ``n_iter=0``: the start, clipped to [0,1]).
    """
    check_momentum(momentum)
    x = x.detach()
    x_adv = x + start_perturbation(x, eps, seed, step, positions)
    if clip_start:
        x_adv = project(x_adv, x, eps, "linf")
    velocity = torch.zeros_like(x)
    idx = torch.arange(len(x), device=x.device)
    for _ in range(n_iter):
        _, _, grad = loss_and_grad(objective, x_adv, idx)
        grad = torch.where(torch.isnan(grad), torch.zeros_like(grad), grad)
        velocity = normalized_step(momentum * velocity + normalized_step(grad, "linf"), "linf")
        x_adv = project(x_adv + step_size * velocity, x, eps, "linf")
    return project(x_adv, x, eps, "linf").detach()
