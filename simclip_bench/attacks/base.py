"""What every attack shares: the objective contract, the l-inf projection and the output check.

An attack never knows what it attacks. It gets an *objective*: a callable that maps adversarial
images (B, 3, H, W) in [0,1] to a per-sample loss to maximise (B,) and a per-sample success flag
(B,) bool. The same APGD then attacks a classifier, an embedding or a language model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

# Float32 rounding of x + delta can exceed eps by about one ulp of a pixel value.
BALL_TOLERANCE = 1e-6


class AttackObjective(Protocol):
    def __call__(self, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss per sample to maximise, success flag per sample)."""
        ...


@dataclass
class AttackResult:
    """Adversarial images and what the attack found.

    ``x_adv`` holds, per sample, the first point where the objective reported success, or the
    point of highest loss when it never did. ``success`` is the flag at ``x_adv``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor


class ClassifierObjective:
    """Untargeted cross-entropy on a classifier: success means the top class is not ``labels``."""

    def __init__(self, classifier: nn.Module, labels: torch.Tensor) -> None:
        self.classifier = classifier
        self.labels = labels

    def __call__(self, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(x_adv).float()
        loss = F.cross_entropy(logits, self.labels, reduction="none")
        return loss, logits.argmax(dim=-1) != self.labels


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Closest point to ``x_adv`` inside the l-inf ball of radius ``eps`` around ``x`` and the [0,1] box."""
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)


def linf_norms(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample l-inf norm of the perturbation (B,), in pixel units."""
    return (x_adv - x).flatten(1).abs().amax(dim=1)


class PerturbationOutOfBounds(AssertionError):
    """An attack returned an image outside the eps-ball or the [0,1] box: a bug, never a result."""


def check_linf_perturbation(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Verify every adversarial example (within eps of its source, inside [0,1]); return per-sample norms."""
    norms = linf_norms(x_adv, x)
    if bool((norms > eps + BALL_TOLERANCE).any()):
        raise PerturbationOutOfBounds(f"perturbation {norms.max().item():.6g} exceeds eps {eps:.6g}")
    if bool((x_adv < 0).any() or (x_adv > 1).any()):
        raise PerturbationOutOfBounds("adversarial image leaves the [0,1] box")
    return norms


def random_linf_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in the eps-ball, rescaled so each sample's largest coordinate reaches eps (as in APGD)."""
    t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    t = t / (t.flatten(1).abs().amax(dim=1).view(-1, *([1] * (x.ndim - 1))) + 1e-12)
    return torch.clamp(x + eps * t, 0.0, 1.0)


def loss_and_grad(objective: AttackObjective, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective value, success flags and the gradient of the summed loss at ``x_adv``."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, success = objective(x_adv)
        grad, = torch.autograd.grad(loss.sum(), [x_adv])
    return loss.detach(), success.detach(), grad.detach()
