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

**Verdicts are decided once, in float32, with a margin** (:meth:`ClassifierObjective.judge`). A
classifier's search flag means "possibly fooled": in float32 the margin ``max_{i != y} z_i - z_y`` is
positive; under reduced precision it is above ``-slack``, where ``slack`` is :data:`NEAR_BOUNDARY_ULPS`
units in the last place of bf16 at the largest logit (bf16 keeps 8 significant bits: at logits of 64-128
one unit is 0.5; measured bf16 margin errors on the built-in classifier were at most 0.82), so an iterate
that float32 calls fooled is not lost to bf16 rounding. Each flagged point is judged in exact float32
(autocast and TF32 off): ``FOOLED`` when the margin exceeds :data:`MARGIN_TOLERANCE` of the largest
logit (1e-4: 0.008 at logits of 80, where float32 logits of one image in different batch compositions
differed by at most 3e-5 on a CPU), ``BORDERLINE`` when it is positive but within that tolerance, else
``NOT_FOOLED``. A FOOLED verdict ends the sample's search, and re-evaluating its point in any batch gives
it again. A BORDERLINE point is remembered and the search goes on for a clearer one; only if none is
found does the sample count fooled at the borderline point (never weaker than a reference that counts
any iterate its own forward pass calls misclassified).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.attacks.rng import sample_normal, sample_uniform

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
# Verdict codes of :meth:`ClassifierObjective.judge`.
NOT_FOOLED, BORDERLINE, FOOLED = 0, 1, 2
# A float32 margin counts as a clear success above this fraction of the largest |logit|.
MARGIN_TOLERANCE = 1e-4
# A reduced-precision search flags a sample whose margin is within this many bf16 units in the last place
# (at the largest |logit|) of the boundary, or past it.
NEAR_BOUNDARY_ULPS = 4.0
BF16_SIGNIFICAND_BITS = 8
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


def judge_of(objective: AttackObjective):
    """``judge(x_adv, idx) -> (codes, preds or None)``: the objective's own ``judge``, or one built from its
    ``confirm`` (FOOLED or NOT_FOOLED), or None when the search's own success flag is final."""
    judge = getattr(objective, "judge", None)
    if judge is not None:
        return judge
    confirm = confirmation_of(objective)
    if confirm is None:
        return None

    def from_confirm(x_adv: torch.Tensor, idx: torch.Tensor):
        ok = confirm(x_adv, idx).to(torch.bool)
        return torch.where(ok, FOOLED, NOT_FOOLED).to(torch.int8), None

    return from_confirm


@contextlib.contextmanager
def exact_float32(device_type: str) -> Iterator[None]:
    """Float32 as written: autocast off, and TF32 off on CUDA (cuDNN convolutions, such as a ViT's patch
    embedding, default to TF32's 10-bit significand). Verdicts are computed inside it."""
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32


def verdict_tolerance(logits: torch.Tensor) -> torch.Tensor:
    """Per sample: the float32 margin a clear success must exceed (:data:`MARGIN_TOLERANCE` of the largest |logit|)."""
    return MARGIN_TOLERANCE * logits.abs().amax(dim=1)


def reduced_precision_slack(logits: torch.Tensor, ulps: float | None = None) -> torch.Tensor:
    """Per sample: how far below 0 a reduced-precision margin may lie while float32 could still call the
    sample fooled: ``ulps`` (default :data:`NEAR_BOUNDARY_ULPS`) bf16 units in the last place of the largest
    |logit|."""
    ulps = NEAR_BOUNDARY_ULPS if ulps is None else ulps
    top = logits.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return ulps * torch.exp2(torch.floor(torch.log2(top)) - (BF16_SIGNIFICAND_BITS - 1))


@dataclass
class AttackResult:
    """Adversarial images and what the attack found, for the samples it was given.

    ``x_adv`` holds, per sample, a point where success was confirmed, or the point of highest loss
    when it never was. ``success`` is the confirmed flag at ``x_adv``; ``loss`` the best loss and
    ``x_best`` the point where it was reached. ``unconfirmed``: how many times a success reported
    by the search was rejected by the objective's confirmation (the sample then kept iterating).
    ``pred`` (where the objective judges, :func:`judge_of`): the float32 prediction at ``x_adv`` of each
    successful sample, from the forward pass that decided it (-1 elsewhere). ``borderline``: how many
    successes are BORDERLINE points (no clearer one was found).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    x_best: torch.Tensor | None = None
    unconfirmed: int = 0
    pred: torch.Tensor | None = None
    borderline: int = 0


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

    The search's flag (``__call__``) means "possibly fooled" (see the module docstring); :meth:`judge`
    decides in exact float32.

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
        with torch.no_grad():
            margin = margin_loss(logits.detach(), y)
            if torch.is_autocast_enabled(x_adv.device.type):
                return loss, margin > -reduced_precision_slack(logits.detach())
        return loss, margin > 0

    @torch.no_grad()
    def judge(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(verdict codes, predictions) in exact float32 (:func:`exact_float32`): FOOLED when the margin
        exceeds :func:`verdict_tolerance`, BORDERLINE when it is positive but within it, else NOT_FOOLED."""
        with exact_float32(x_adv.device.type):
            logits = self.classifier(x_adv).float()
        margin = margin_loss(logits, self.labels[idx])
        codes = torch.where(margin > verdict_tolerance(logits), FOOLED, torch.where(margin > 0, BORDERLINE, NOT_FOOLED))
        return codes.to(torch.int8), logits.argmax(dim=-1)

    def confirm(self, x_adv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """A clear float32 success (:meth:`judge` says FOOLED)."""
        return self.judge(x_adv, idx)[0] == FOOLED


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
