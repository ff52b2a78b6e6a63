"""Worst-case cost of an attack, counted the way :mod:`simclip_bench.attacks.cost` counts it, before anything runs.

A *gradient evaluation* is one forward and backward pass of one image (:mod:`simclip_bench.attacks.cost`). The
worst case is an image that is clean-correct and never fooled, so every attack of the ensemble runs its whole
budget on it:

* APGD: ``1 + n_iter`` per restart (the start point, then one per iteration); APGD-CE at 100 iterations: 101;
* APGD-T: that, for each of ``min(n_targets, C - 1)`` targets; ``apgd-ce+apgd-t`` on 8 classes: 101 + 7 x 101
  = 808; with MALT's ranking, ``min(max(n_targets, 9), C - 1)`` more for the ranking itself (one per candidate);
  the fast protocol on 8 classes: 51 + 7 + 2 x 51 = 160;
* PGD: ``n_iter``; Square: none, but ``n_queries`` forward passes (5 000);
* skipped attacks (APGD-T below 4 classes, APGD-DLR below 3) cost nothing, as in :func:`~simclip_bench.attacks.
  ensemble.run_ensemble`.

Forward-only passes (clean predictions, the float32 verdict after each run, Square's queries) are counted apart.
``passes`` counts the batched calls of the worst case, which is what a launch- or interpreter-bound run pays per
call whatever the batch holds. ``tests/test_plan.py`` checks every number against the counts of a real run on a
classifier no attack can fool.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from simclip_bench.attacks.registry import AttackSpec, EnsembleSpec
from simclip_bench.attacks.target_ranking import MALT_CANDIDATES

# Reference backend, standard AutoAttack (pyautoattack): APGD-CE, APGD-T (9 targets), FAB-T (9 targets, 100
# iterations; assumed one gradient per iteration plus its start), Square (5 000 queries).
STANDARD_AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclass(frozen=True)
class AttackBudget:
    """Per image, in the worst case: gradient evaluations, forward-only passes, and the runs they come from."""

    grad_evals: float = 0.0
    forward_passes: float = 0.0
    runs: int = 0
    detail: tuple[str, ...] = ()

    def __add__(self, other: AttackBudget) -> AttackBudget:
        return AttackBudget(self.grad_evals + other.grad_evals, self.forward_passes + other.forward_passes,
                            self.runs + other.runs, self.detail + other.detail)

    def scaled(self, factor: float) -> AttackBudget:
        return AttackBudget(self.grad_evals * factor, self.forward_passes * factor, self.runs, self.detail)


def single_budget(attack: AttackSpec, n_classes: int) -> AttackBudget:
    """Worst case of one attack of an ensemble on a ``n_classes``-way classifier."""
    if attack.loss == "dlr-targeted" and n_classes < 4 or attack.loss == "dlr" and n_classes < 3:
        return AttackBudget(detail=(f"{attack.label}: skipped ({n_classes} classes)",))
    if attack.kind == "square":
        return AttackBudget(0.0, attack.n_iter + 1, 1, (f"{attack.label}: {attack.n_iter} queries",))
    if attack.kind == "pgd":
        return AttackBudget(attack.n_iter, 2, 1, (f"{attack.label}: {attack.n_iter}",))
    per_run = attack.n_restarts * (1 + attack.n_iter)
    if attack.loss != "dlr-targeted":
        return AttackBudget(per_run, 1, 1, (f"{attack.label}: {per_run}",))
    targets = min(attack.n_targets, n_classes - 1)
    ranking = min(max(attack.n_targets, MALT_CANDIDATES), n_classes - 1) if attack.ranking == "malt" else 0
    text = f"{attack.label}: {targets} targets x {per_run}" + (f" + {ranking} for MALT's ranking" if ranking else "")
    return AttackBudget(targets * per_run + ranking, targets, targets, (text,))


def ensemble_budget(spec: EnsembleSpec, n_classes: int) -> AttackBudget:
    """Worst case of ``--attack`` per clean-correct image that is never fooled, plus the two clean predictions."""
    total = AttackBudget(0.0, 2.0)  # the clean prediction and the ensemble's clean logits
    if spec.is_clean:
        return AttackBudget(0.0, 1.0)
    if spec.backend == "reference" and not spec.reference_attacks:
        return total + _standard_autoattack(n_classes)
    for attack in spec.attacks:
        total = total + single_budget(attack, n_classes)
    return total


def _standard_autoattack(n_classes: int) -> AttackBudget:
    targets = min(9, n_classes - 1)
    grads = 101 + targets * 101 + targets * 101
    return AttackBudget(grads, 5001 + 2 * targets, 2 + 2 * targets,
                        ("apgd-ce: 101", f"apgd-t: {targets} x 101", f"fab-t: {targets} x 101 (assumed)",
                         "square: 5000 queries"))


def ensemble_passes(spec: EnsembleSpec, n_classes: int, n_images: int, batch_size: int) -> int:
    """Batched calls of the worst case: every run of every attack, each iteration once per working batch, plus
    the clean predictions and a verdict after every run."""
    chunks = math.ceil(n_images / batch_size)
    if spec.is_clean:
        return chunks
    passes = 2 * chunks
    for attack in spec.attacks:
        budget = single_budget(attack, n_classes)
        if budget.runs == 0:
            continue
        per_run = attack.n_iter + 1 if attack.kind in ("square", "pgd") else attack.n_restarts * (1 + attack.n_iter)
        passes += chunks * budget.runs * (per_run + 1)
    if spec.backend == "reference" and not spec.reference_attacks:  # APGD-CE, APGD-T, FAB-T, Square
        targets = min(9, n_classes - 1)
        passes += chunks * ((1 + 2 * targets) * 102 + 5001)
    return passes
