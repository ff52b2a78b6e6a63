"""The reference implementation as a backend: AutoAttack (Croce & Hein 2020) through ``pyautoattack``.

``autoattack`` is standard AutoAttack (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets,
Square with 5 000 queries), the community-standard number. ``ref:<ensemble>`` runs our ensemble's
attacks through the reference code with the same budgets (restarts, targets, iterations: ``apgd-ce*5``
gives the reference's APGD-CE 5 restarts), for side-by-side checks of strength and speed.
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


def rebuilt_apgd(adversary, targeted: bool, n_iter: int, n_targets: int = 9, n_restarts: int = 1):
    """A reference APGD (or APGD-T) with ``n_iter`` iterations, built by the reference's own constructor.

    The reference derives its step-size checkpoints (first interval 22 %, minimum 6 %, decrease 3 % of the
    iterations) in its constructor; setting ``n_iter`` afterwards would keep those of 100 iterations, so at
    ``--iterations 20`` the reference would never halve its step and side-by-side runs would handicap it.
    Settings as AutoAttack's own: one EOT sample, rho 0.75, the adversary's seed and device; ``n_restarts``
    as our spec says (``apgd-ce*5``: 5).
    """
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    common = {"n_restarts": n_restarts, "n_iter": n_iter, "verbose": False, "eps": adversary.epsilon,
              "norm": adversary.norm, "eot_iter": 1, "rho": 0.75, "seed": adversary.seed,
              "device": adversary.device, "logger": adversary.logger}
    if targeted:
        return APGDAttack_targeted(adversary.model, n_target_classes=n_targets, **common)
    return APGDAttack(adversary.model, **common)


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
        untargeted = by_name.get("apgd-ce") or by_name.get("apgd-dlr")
        if untargeted:
            adversary.apgd = rebuilt_apgd(adversary, False, untargeted.n_iter, n_restarts=untargeted.n_restarts)
        targeted = by_name.get("apgd-t")
        if targeted:
            # Like ours: at most C-1 targets (the reference would index past the last class).
            adversary.apgd_targeted = rebuilt_apgd(adversary, True, targeted.n_iter,
                                                   min(targeted.n_targets, _n_classes(classifier, x) - 1),
                                                   targeted.n_restarts)
        if "square" in by_name:
            adversary.square.n_queries = by_name["square"].n_iter
    else:
        adversary = AutoAttack(classifier, version="standard", eps=eps, norm=_NORMS[norm], seed=seed, device=device)
        adversary.apgd_targeted.n_target_classes = min(9, _n_classes(classifier, x) - 1)
        adversary.fab.n_target_classes = min(9, _n_classes(classifier, x) - 1)
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x.contiguous(), labels, batch_size=batch_size)
    return x_adv.to(x.device)
