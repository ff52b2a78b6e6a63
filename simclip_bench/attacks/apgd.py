"""Auto-PGD, l-inf (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020).

Defaults are the paper's and the reference implementation's (fra31/auto-attack):

* 100 iterations, 1 restart, uniform random start rescaled to the ball's surface;
* initial step size 2·eps, halved at the checkpoints when the loss oscillates
  (fewer than rho = 0.75 of the steps since the last checkpoint increased it) or when neither the
  step was reduced nor the best loss improved since the last checkpoint; after a halving the
  iterate restarts from the best point found;
* checkpoints after 22 % of the iterations, then at shrinking intervals (-3 %, at least 6 %);
* momentum 0.75 (the first step has none).

The attack never synchronises with the host inside its loop: all per-sample bookkeeping is done
with tensor masks, and the checkpoint schedule depends only on ``n_iter``.
"""
from __future__ import annotations

import torch

from simclip_bench.attacks.base import (
    AttackObjective,
    AttackResult,
    loss_and_grad,
    project_linf,
    random_linf_start,
)

MOMENTUM = 0.75
RHO = 0.75


def checkpoint_schedule(n_iter: int) -> list[int]:
    """Iterations (0-based) after which the step-size conditions are checked."""
    k = max(int(0.22 * n_iter), 1)
    k_min = max(int(0.06 * n_iter), 1)
    decrease = max(int(0.03 * n_iter), 1)
    checks, counter = [], 0
    for i in range(n_iter):
        counter += 1
        if counter == k:
            checks.append((i, k))
            k = max(k - decrease, k_min)
            counter = 0
    return checks


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


def apgd_linf(objective: AttackObjective, x: torch.Tensor, eps: float, n_iter: int = 100,
              generator: torch.Generator | None = None) -> AttackResult:
    """One run of APGD maximising ``objective`` within the l-inf ``eps``-ball around ``x``.

    Args:
        objective: maps images in [0,1] to (loss per sample, success per sample).
        x: clean images (B, 3, H, W) in [0,1].
        eps: l-inf radius in pixel units, e.g. 4/255.
        n_iter: iterations (default 100).
        generator: source of the random start (default: torch's global generator).
    """
    x = x.detach()
    checks = dict(checkpoint_schedule(n_iter))
    x_adv = random_linf_start(x, eps, generator)
    loss, success, grad = loss_and_grad(objective, x_adv)
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    x_found = x_adv.clone()  # first successful point per sample, else overwritten by x_best at the end
    found = success.clone()
    step = torch.full((x.shape[0],), 2.0 * eps, device=x.device, dtype=x.dtype)
    loss_steps = torch.zeros((n_iter, x.shape[0]), device=x.device, dtype=loss.dtype)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(found)
    x_prev = x_adv.clone()

    for i in range(n_iter):
        with torch.no_grad():
            a = MOMENTUM if i > 0 else 1.0
            s = _expand(step, x)
            z = project_linf(x_adv + s * grad.sign(), x, eps)
            x_next = project_linf(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)
            x_prev, x_adv = x_adv, x_next

        loss, success, grad = loss_and_grad(objective, x_adv)

        with torch.no_grad():
            newly = success & ~found
            x_found = torch.where(_expand(newly, x), x_adv, x_found)
            found |= success
            loss_steps[i] = loss
            better = loss > loss_best
            x_best = torch.where(_expand(better, x), x_adv, x_best)
            grad_best = torch.where(_expand(better, x), grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)

            if i in checks:
                k = checks[i]
                # Count increases over the last k steps; like the reference, index -1 reads the
                # (still zero) last row of loss_steps at the first checkpoint.
                idx = torch.arange(i, i - k, -1)
                increases = (loss_steps[idx] > loss_steps[idx - 1]).sum(dim=0)
                oscillating = increases <= k * RHO
                stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)
                reduce = oscillating | stalled
                reduced_last_check = reduce.clone()
                loss_best_last_check = loss_best.clone()
                step = torch.where(reduce, step / 2.0, step)
                x_adv = torch.where(_expand(reduce, x), x_best, x_adv)
                grad = torch.where(_expand(reduce, x), grad_best, grad)

    x_out = torch.where(_expand(found, x), x_found, x_best)
    return AttackResult(x_adv=x_out.detach(), success=found, loss=loss_best)
