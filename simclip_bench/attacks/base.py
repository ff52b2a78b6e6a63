"""What every attack shares: the objective contract, norms, projections and the output check.

An attack never knows what it attacks. It gets an *objective* over a fixed set of N samples:
``objective(x_adv, idx)`` maps adversarial images (B, C, H, W) in [0,1] of the samples with
global indices ``idx`` (B,) to a per-sample loss to maximise (B,) and a per-sample success flag
(B,) bool. Labels, targets and reference embeddings live in the objective and are looked up by
``idx``, so an attack can move samples in and out of its working batch freely. The same APGD thus
attacks a classifier, an embedding or a language model.

The success flag comes from the search's own forward pass, which may run in reduced precision
(bf16 autocast). An objective whose flag can be wrong there also has ``confirm(x_adv, idx)``: the
verdict at the precision that is reported (float32 logits, or the generated text). An attack stops
a sample only on a confirmed success and keeps iterating otherwise (:class:`ConfirmedObjective`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.attacks.rng import sample_normal, sample_uniform

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
# Float32 rounding of x + delta can exceed eps by about one ulp of a pixel value.
BALL_TOLERANCE = 1e-5


class AttackObjective(Protocol):
    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss per sample to maximise, success flag per sample) for samples ``idx``."""
        ...


class ConfirmedObjective(AttackObjective, Protocol):
    def confirm(self, x_adv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Success per sample (B,) bool at the precision that is reported, outside any autocast."""
        ...


def confirmation_of(objective: AttackObjective):
    """The objective's ``confirm`` method, or None when its own success flag is final."""
    return getattr(objective, "confirm", None)


@dataclass
class AttackResult:
    """Adversarial images and what the attack found, for the samples it was given.

    ``x_adv`` holds, per sample, a point where success was confirmed, or the point of highest loss
    when it never was. ``success`` is the confirmed flag at ``x_adv``; ``loss`` the best loss and
    ``x_best`` the point where it was reached. ``unconfirmed``: how many times a success reported
    by the search was rejected by the objective's confirmation (the sample then kept iterating).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    x_best: torch.Tensor | None = None
    unconfirmed: int = 0


def _dlr_denominator(z_sorted: torch.Tensor, targeted: bool) -> torch.Tensor:
    if targeted:
        return z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12
    return z_sorted[:, -1] - z_sorted[:, -3] + 1e-12


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), untargeted, per sample: needs >= 3 classes."""
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_y = logits.argmax(1) == labels
    z_other = torch.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - z_other) / _dlr_denominator(z_sorted, targeted=False)


def dlr_targeted_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020), per sample: pushes the target logit above the true one; >= 4 classes."""
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / _dlr_denominator(z_sorted, targeted=True)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{i != y} z_i - z_y`` per sample: positive exactly when the sample is misclassified."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.amax(dim=1) - z_y


CLASSIFIER_LOSSES: tuple[str, ...] = ("ce", "dlr", "dlr-targeted", "margin")


class ClassifierObjective:
    """A classifier attack objective; success means the top class is not the label.

    Args:
        classifier: maps images in [0,1] to logits (B, C).
        labels: true labels of all N samples (N,).
        loss: ``ce`` (default), ``dlr``, ``dlr-targeted`` (needs ``targets``) or ``margin``.
        targets: target class of each of the N samples, for ``dlr-targeted``.
    """

    def __init__(self, classifier: nn.Module, labels: torch.Tensor, loss: str = "ce",
                 targets: torch.Tensor | None = None) -> None:
        if loss not in CLASSIFIER_LOSSES:
            raise ValueError(f"unknown classifier loss {loss!r}; choose one of {CLASSIFIER_LOSSES}")
        if loss == "dlr-targeted" and targets is None:
            raise ValueError("dlr-targeted needs targets")
        self.classifier = classifier
        self.labels = labels
        self.loss = loss
        self.targets = targets

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(x_adv).float()
        y = self.labels[idx]
        if self.loss == "ce":
            loss = F.cross_entropy(logits, y, reduction="none")
        elif self.loss == "dlr":
            loss = dlr_loss(logits, y)
        elif self.loss == "margin":
            loss = margin_loss(logits, y)
        else:
            loss = dlr_targeted_loss(logits, y, self.targets[idx])
        return loss, logits.argmax(dim=-1) != y

    @torch.no_grad()
    def confirm(self, x_adv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Misclassified in float32, outside any autocast (what the result tables count)."""
        with torch.autocast(x_adv.device.type, enabled=False):
            return self.classifier(x_adv).float().argmax(dim=-1) != self.labels[idx]


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm (B,) as the reference computes it (square, sum, root: the same float rounding)."""
    return (t ** 2).flatten(1).sum(-1).sqrt()


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: Norm = "linf") -> torch.Tensor:
    """Per-sample norm of the perturbation (B,), in pixel units."""
    delta = x_adv - x
    return delta.flatten(1).abs().amax(dim=1) if norm == "linf" else l2_norms(delta)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm = "linf") -> torch.Tensor:
    """Closest point to ``x_adv`` in the ``norm`` ball of radius ``eps`` around ``x``, then clipped to [0,1].

    Clipping after the projection never leaves the ball, since ``x`` itself is in [0,1]. The l2 branch
    is written as fra31/auto-attack writes it, ``x + delta/||delta|| * min(eps, ||delta||)``, so that
    trajectories agree with the reference to the last bit.
    """
    if norm == "linf":
        return torch.clamp(torch.minimum(torch.maximum(x_adv, x - eps), x + eps), 0.0, 1.0)
    delta = x_adv - x
    n = _view(l2_norms(delta), x)
    return torch.clamp(x + delta / (n + 1e-12) * n.clamp(max=eps), 0.0, 1.0)


def normalized_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent direction of unit size in ``norm``: sign for l-inf, grad/||grad|| for l2."""
    if norm == "linf":
        return grad.sign()
    return grad / (_view(l2_norms(grad), grad) + 1e-12)


def random_start(x: torch.Tensor, eps: float, norm: Norm, seeds: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """APGD's random start: a random direction scaled to the ball's surface, clipped to [0,1].

    l-inf: uniform in [-1,1] rescaled so the largest coordinate is eps; l2: Gaussian scaled to norm eps.
    Row b depends only on ``seeds[b]`` (batch-invariant).
    """
    shape = tuple(x.shape[1:])
    if norm == "linf":
        t = 2 * sample_uniform(seeds, stream, shape, x.device, x.dtype) - 1
        scale = t.flatten(1).abs().amax(dim=1)
    else:
        t = sample_normal(seeds, stream, shape, x.device, x.dtype)
        scale = l2_norms(t)
    return torch.clamp(x + eps * t / (_view(scale, x) + 1e-12), 0.0, 1.0)


class PerturbationOutOfBounds(AssertionError):
    """An attack returned an image outside the eps-ball or the [0,1] box: a bug, never a result."""


def check_perturbation(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm = "linf") -> torch.Tensor:
    """Verify every adversarial example (within eps of its source, inside [0,1]); return per-sample norms."""
    norms = perturbation_norms(x_adv, x, norm)
    tolerance = BALL_TOLERANCE * (1.0 if norm == "linf" else max(1.0, eps))
    if bool((norms > eps + tolerance).any()):
        raise PerturbationOutOfBounds(f"{norm} perturbation {norms.max().item():.6g} exceeds eps {eps:.6g}")
    if bool((x_adv < 0).any() or (x_adv > 1).any()):
        raise PerturbationOutOfBounds("adversarial image leaves the [0,1] box")
    return norms


def loss_and_grad(objective: AttackObjective, x_adv: torch.Tensor,
                  idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective value, success flags and the gradient of the summed loss at ``x_adv``."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, success = objective(x_adv, idx)
        grad, = torch.autograd.grad(loss.sum(), [x_adv])
    return loss.detach(), success.detach(), grad.detach()
