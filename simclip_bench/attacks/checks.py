"""Signs of gradient masking (after AutoAttack's ``checks`` and Carlini et al. 2019).

Each check returns flag strings; an empty list means nothing suspicious. Flags travel into the
``flags`` column of the result rows and are printed, so a number that may be an artefact of
masking is never silently reported as robustness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FLAG_RANDOM_OUTPUTS = "random-outputs"
FLAG_SOFTMAX_OUTPUTS = "softmax-outputs"
FLAG_ZERO_GRADIENTS = "zero-gradients"
FLAG_SQUARE_BEAT_WHITE_BOX = "square-beat-white-box"
FLAG_ROBUST_ABOVE_CLEAN = "robust-above-clean"
FLAG_ROBUST_RISES_WITH_EPS = "robust-rises-with-eps"


def preflight_checks(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int | None = None) -> list[str]:
    """Checks on a small batch before attacking: randomness, probability outputs, zero input gradients.

    ``batch_size`` splits the passes into pieces of that many images (all at once by default); every check is
    per image, so the flags do not depend on it.
    """
    step = batch_size or len(x)
    pieces = [slice(i, i + step) for i in range(0, len(x), step)]
    flags = []
    with torch.no_grad():
        first = torch.cat([classifier(x[p]).float() for p in pieces])
        second = torch.cat([classifier(x[p]).float() for p in pieces])
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        flags.append(FLAG_RANDOM_OUTPUTS)
    if bool((first >= 0).all() and (first <= 1).all()) and torch.allclose(first.sum(-1), first.new_ones(len(x)),
                                                                            atol=1e-4):
        flags.append(FLAG_SOFTMAX_OUTPUTS)
    zero = 0
    for p in pieces:
        xg = x[p].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(F.cross_entropy(classifier(xg).float(), y[p], reduction="sum"), [xg])
        zero += int((grad.flatten(1).abs().amax(dim=1) == 0).sum())
    if zero:
        flags.append(f"{FLAG_ZERO_GRADIENTS}({zero}/{len(x)})")
    return flags


def accuracy_flags(clean: float, robust_by_eps: dict[float, float]) -> dict[float, list[str]]:
    """Per-eps flags from accuracies alone: robust above clean, or robust rising as eps grows."""
    flags: dict[float, list[str]] = {eps: [] for eps in robust_by_eps}
    previous = None
    for eps in sorted(robust_by_eps):
        acc = robust_by_eps[eps]
        if acc > clean + 1e-12:
            flags[eps].append(FLAG_ROBUST_ABOVE_CLEAN)
        if previous is not None and acc > previous + 1e-12:
            flags[eps].append(FLAG_ROBUST_RISES_WITH_EPS)
        previous = acc
    return flags
