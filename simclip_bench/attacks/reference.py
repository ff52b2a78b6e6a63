"""The reference implementation as a backend: AutoAttack (Croce & Hein 2020) through ``pyautoattack``.

``autoattack`` is standard AutoAttack (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets,
Square with 5 000 queries), the community-standard number. ``ref:<ensemble>`` runs our ensemble's
attacks through the reference code with the same budgets (1 restart, 9 targets, 100 iterations),
for side-by-side checks of strength and speed.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from simclip_bench.attacks.base import Norm
from simclip_bench.attacks.registry import EnsembleSpec
from simclip_bench.errors import UserError

_NORMS = {"linf": "Linf", "l2": "L2"}


def _n_classes(classifier: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(classifier(x[:1]).shape[1])


def run_reference(spec: EnsembleSpec, classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float,
                  norm: Norm = "linf", seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Adversarial images for all of ``x`` from the reference code (misclassified samples come back unchanged)."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError("the reference backend needs pyautoattack: pip install pyautoattack") from None
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    device = str(x.device)
    if spec.reference_attacks:
        adversary = AutoAttack(classifier, attacks=list(spec.reference_attacks), version="custom", eps=eps,
                               norm=_NORMS[norm], seed=seed, device=device)
        by_name = {a.name: a for a in spec.attacks}
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
        if "apgd-ce" in by_name or "apgd-dlr" in by_name:
            adversary.apgd.n_iter = (by_name.get("apgd-ce") or by_name["apgd-dlr"]).n_iter
        if "apgd-t" in by_name:
            adversary.apgd_targeted.n_iter = by_name["apgd-t"].n_iter
            # Like ours: at most C-1 targets (the reference would index past the last class).
            adversary.apgd_targeted.n_target_classes = min(by_name["apgd-t"].n_targets, _n_classes(classifier, x) - 1)
        if "square" in by_name:
            adversary.square.n_queries = by_name["square"].n_iter
    else:
        adversary = AutoAttack(classifier, version="standard", eps=eps, norm=_NORMS[norm], seed=seed, device=device)
        adversary.apgd_targeted.n_target_classes = min(9, _n_classes(classifier, x) - 1)
        adversary.fab.n_target_classes = min(9, _n_classes(classifier, x) - 1)
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x.contiguous(), labels, batch_size=batch_size)
    return x_adv.to(x.device)
