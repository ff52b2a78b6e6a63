"""Which classes APGD-T attacks towards, and in what order.

* ``logits`` (AutoAttack, Croce & Hein 2020): the 2nd, 3rd, ... most likely classes at the clean image.
* ``malt``, after MALT (Melamed et al. 2024, arXiv 2407.02240): the candidate classes re-ordered by their
  distance to the decision boundary under a linear model of the logit difference at the clean image,
  ``(z_y - z_t) / ||grad_x (z_y - z_t)||_*``, with ``||.||_*`` the dual norm of the threat model (l1 for
  l-inf, l2 for l2). A target whose boundary is near in that first-order sense comes first, however
  likely it is; with a few targets the targeted attack then spends its budget where it can still win.
  The candidates are the ``n_candidates`` most likely classes (default 9, AutoAttack's APGD-T set), so
  the ranking costs ``n_candidates`` gradient evaluations per sample.

Our own simplification of MALT's idea: one linearisation at the clean image over the candidates, no
mesoscopic refinement.
"""
from __future__ import annotations

import torch
from torch import nn

from simclip_bench.attacks.base import Norm

RANKINGS: tuple[str, ...] = ("logits", "malt")
MALT_CANDIDATES = 9


def logit_order(clean_logits: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) classes by decreasing clean logit, the label left out: AutoAttack's target order."""
    others = clean_logits.scatter(1, labels[:, None], float("-inf"))
    return others.topk(min(n, clean_logits.shape[1] - 1), dim=1).indices


def linearised_distances(classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor,
                         norm: Norm = "linf", counts: torch.Tensor | None = None,
                         idx: torch.Tensor | None = None) -> torch.Tensor:
    """(B, m) first-order distance of each sample to the boundary between its label and each candidate class.

    Runs in float32, one backward pass per candidate column; ``counts[idx]`` (when given) grows by the m
    gradient evaluations each sample cost.
    """
    xs = x.detach().clone().requires_grad_(True)
    out = []
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        z = classifier(xs).float()
        z_y = z.gather(1, labels[:, None]).squeeze(1)
        for j in range(candidates.shape[1]):
            diff = z_y - z.gather(1, candidates[:, j:j + 1]).squeeze(1)
            grad, = torch.autograd.grad(diff.sum(), [xs], retain_graph=j + 1 < candidates.shape[1])
            dual = grad.flatten(1).abs().sum(1) if norm == "linf" else grad.flatten(1).norm(dim=1)
            out.append(diff.detach() / (dual + 1e-12))
    if counts is not None and idx is not None:
        counts.index_add_(0, idx.to(counts.device),
                          torch.full((len(idx),), float(candidates.shape[1]), dtype=counts.dtype,
                                     device=counts.device))
    return torch.stack(out, dim=1)


def malt_order(classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, clean_logits: torch.Tensor,
               norm: Norm = "linf", n_candidates: int = MALT_CANDIDATES, batch_size: int = 500,
               counts: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> torch.Tensor:
    """(B, m) candidate classes ordered by increasing linearised distance (MALT's target order)."""
    candidates = logit_order(clean_logits, labels, n_candidates)
    order = torch.empty_like(candidates)
    for i in range(0, len(x), batch_size):
        part = slice(i, i + batch_size)
        d = linearised_distances(classifier, x[part], labels[part], candidates[part], norm, counts,
                                 None if idx is None else idx[part])
        order[part] = candidates[part].gather(1, d.argsort(dim=1, stable=True))
    return order
