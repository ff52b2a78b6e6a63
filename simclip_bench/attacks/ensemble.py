"""Worst case per sample over a list of attacks on a classifier (AutoAttack's protocol).

Robust flags are the state: they start as "clean-correct", each attack runs only on the samples
still robust, and a sample fooled by any attack is not robust (the AND of the per-sample flags).
Every adversarial example is checked (inside the eps-ball and [0,1]). **A verdict is decided once, in
float32**: APGD and Square stop a sample only on a success their objective judged in exact float32
(:mod:`simclip_bench.attacks.base`), and that verdict, with its prediction, is the one counted (never
recomputed in another batch, where float rounding could flip a point at the boundary). A point an
attack returns as not fooled is judged once more in exact float32, and counts fooled if float32 says
so (a reduced-precision search never raises robust accuracy). ``unconfirmed`` counts the flags that
the float32 judgement rejected.
Each sample's gradient evaluations are counted (:mod:`simclip_bench.attacks.cost`), so every result
carries its cost.
"""
from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass, field

import torch
from torch import nn

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import ClassifierObjective, Norm, check_perturbation, exact_float32
from simclip_bench.attacks.checks import FLAG_SQUARE_BEAT_WHITE_BOX
from simclip_bench.attacks.cost import CountedObjective
from simclip_bench.attacks.pgd import pgd
from simclip_bench.attacks.registry import AttackSpec, EnsembleSpec
from simclip_bench.attacks.rng import sample_seeds
from simclip_bench.attacks.target_ranking import MALT_CANDIDATES, malt_order


@dataclass
class EnsembleOutcome:
    """Per-sample results over N samples: ``robust`` (N,), ``x_adv`` (N, C, H, W), ``adv_pred`` (N,) the
    float32 prediction at ``x_adv``, ``fooled_by`` (N,) names ("" when robust or never attacked),
    ``norms`` (N,) perturbation norms, ``grad_evals`` (N,) the gradient evaluations each sample cost, plus flags."""

    robust: torch.Tensor
    x_adv: torch.Tensor
    adv_pred: torch.Tensor
    fooled_by: list[str]
    norms: torch.Tensor
    flags: list[str] = field(default_factory=list)
    unconfirmed: int = 0
    grad_evals: torch.Tensor | None = None
    borderline: int = 0  # successes counted at a BORDERLINE point (fooled by less than the float32 tolerance)


@dataclass
class _Single:
    """One attack's output: images, and where the attack judged them, its float32 verdicts and predictions."""

    x_adv: torch.Tensor
    success: torch.Tensor | None = None
    pred: torch.Tensor | None = None
    unconfirmed: int = 0
    borderline: int = 0


def _salt(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


@torch.no_grad()
def predict(classifier: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Top-1 predictions in exact float32 (no autocast, no TF32), in batches."""
    return logits_of(classifier, x, batch_size).argmax(-1)


@torch.no_grad()
def logits_of(classifier: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits in exact float32 (no autocast, no TF32), in batches."""
    with exact_float32(x.device.type):
        return torch.cat([classifier(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])


def apgd_t_targets(clean_logits: torch.Tensor, rank: int) -> torch.Tensor:
    """APGD-T's target class of each sample in its run ``rank`` = 2, 3, ...: the rank-th most likely class
    under the clean logits, as the reference picks it (``sort(clean_logits)[1][:, -rank]``)."""
    return clean_logits.sort(dim=1).indices[:, -rank]


def _run_single(spec: AttackSpec, classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
                keys: torch.Tensor, eps: float, norm: Norm, seed: int, batch_size: int, counts: torch.Tensor,
                targets: torch.Tensor | None = None, target_rank: int = 0) -> _Single:
    """Adversarial images for samples ``idx`` (positions into ``labels``, ``targets`` and ``counts``; ``keys``
    their stable identities, which seed their randomness) from one attack, with its float32 verdicts where it
    judges them; for a targeted attack, the run towards ``targets`` (its ``target_rank``-th target, which salts
    the seed). ``counts`` grows by each sample's gradient evaluations."""
    if spec.kind == "apgd":
        objective = CountedObjective(ClassifierObjective(classifier, labels, spec.loss, targets), counts)
        attack = APGD(eps, norm=norm, n_iter=spec.n_iter, n_restarts=spec.n_restarts, batch_size=batch_size,
                      seed=seed ^ _salt(spec.name, target_rank))
        r = attack.run(objective, x, idx, seed_ids=keys)
        return _Single(r.x_adv, r.success, r.pred, r.unconfirmed, r.borderline)
    if spec.kind == "square":
        from simclip_bench.attacks.square import square_attack

        out = _Single(torch.empty_like(x), torch.zeros(len(x), dtype=torch.bool, device=x.device),
                      torch.full((len(x),), -1, dtype=torch.long, device=x.device))
        objective = ClassifierObjective(classifier, labels, "margin")
        seeds = sample_seeds(seed ^ _salt(spec.name), keys)
        for i in range(0, len(x), batch_size):
            r = square_attack(objective, x[i:i + batch_size], idx[i:i + batch_size], eps, seeds[i:i + batch_size],
                              norm=norm, n_queries=spec.n_iter)
            out.x_adv[i:i + batch_size], out.success[i:i + batch_size], out.pred[i:i + batch_size] = \
                r.x_adv, r.success, r.pred
            out.unconfirmed += r.unconfirmed
            out.borderline += r.borderline
        return out
    if spec.kind == "pgd":
        seeds = sample_seeds(seed ^ _salt(spec.name), keys)
        objective = CountedObjective(ClassifierObjective(classifier, labels, spec.loss), counts)
        out = torch.empty_like(x)
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = pgd(objective, x[i:i + batch_size], eps, n_iter=spec.n_iter,
                                        step_size=2.5 * eps / spec.n_iter, norm=norm, seeds=seeds[i:i + batch_size],
                                        idx=idx[i:i + batch_size]).x_adv
        return _Single(out)
    raise ValueError(spec.kind)  # pragma: no cover - the registry is closed


def run_ensemble(spec: EnsembleSpec, classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float,
                 norm: Norm = "linf", seed: int = 0, batch_size: int = 500, autocast=None,
                 sample_keys: torch.Tensor | None = None) -> EnsembleOutcome:
    """Run ``spec``'s attacks in order, each on the samples still robust; return per-sample outcomes.

    ``autocast`` (a context-manager factory, e.g. bf16 on CUDA) wraps the attack search only.
    ``sample_keys`` (N,) int64: the samples' stable identities (e.g. dataset indices), which seed each
    sample's randomness; default ``arange(N)``. With them, a sample's outcome is the same whatever
    else is in the call, so a run cut into pieces (resume) gives the uninterrupted result.
    """
    autocast = autocast or contextlib.nullcontext
    n = len(x)
    keys = torch.arange(n) if sample_keys is None else sample_keys.to(torch.int64).cpu()
    clean_logits = logits_of(classifier, x, batch_size)
    adv_pred = clean_logits.argmax(-1)
    robust = adv_pred == labels
    x_adv = x.clone()
    fooled_by = [""] * n
    norms = torch.zeros(n, device=x.device)
    flags: list[str] = []
    n_classes = clean_logits.shape[1]
    attack_progress.plan(attack_progress.ensemble_runs(spec, n_classes))
    white_box_ran = False
    unconfirmed = borderline = 0
    counts = torch.zeros(n, dtype=torch.float64, device=x.device)
    for attack in spec.attacks:
        ranks = range(2, attack.n_targets + 2) if attack.loss == "dlr-targeted" else [0]
        if attack.loss == "dlr-targeted" and n_classes < 4 or attack.loss == "dlr" and n_classes < 3:
            flags.append(f"skipped-{attack.name}({n_classes}-classes)")
            continue
        ranked = _malt_targets(attack, classifier, x, labels, robust, clean_logits, norm, batch_size, counts)
        for rank in ranks:
            if rank and rank > n_classes:
                break
            todo = torch.nonzero(robust).flatten()
            if len(todo) == 0:
                break
            targets = None
            if attack.loss == "dlr-targeted":
                targets = apgd_t_targets(clean_logits, rank) if ranked is None else ranked[:, rank - 2]
            attack_progress.run(attack_progress.run_label(attack, rank, n_classes), len(todo))
            with autocast():
                single = _run_single(attack, classifier, x[todo], labels, todo, keys[todo.cpu()], eps, norm,
                                     seed, batch_size, counts, targets, rank)
            unconfirmed += single.unconfirmed
            borderline += single.borderline
            adv = single.x_adv
            todo_norms = check_perturbation(adv, x[todo], eps, norm)
            fooled, pred = _verdicts(classifier, adv, labels[todo], single, batch_size)
            hit = todo[fooled]
            x_adv[hit], norms[hit], adv_pred[hit] = adv[fooled], todo_norms[fooled], pred[fooled]
            robust[hit] = False
            for i in hit.tolist():
                fooled_by[i] = attack.name
            if attack.kind == "square" and white_box_ran and len(hit):
                flags.append(f"{FLAG_SQUARE_BEAT_WHITE_BOX}({len(hit)})")
        white_box_ran |= attack.kind != "square"
    attack_progress.finished()
    return EnsembleOutcome(robust=robust, x_adv=x_adv, adv_pred=adv_pred, fooled_by=fooled_by, norms=norms,
                           flags=flags, unconfirmed=unconfirmed, grad_evals=counts.cpu(), borderline=borderline)


def _verdicts(classifier: nn.Module, adv: torch.Tensor, labels: torch.Tensor, single: _Single,
              batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled, float32 prediction) of each returned point: the attack's own float32 verdict where it judged
    one (decided once, not recomputed); every other point judged now, in exact float32."""
    if single.success is None:
        pred = predict(classifier, adv, batch_size)
        return pred != labels, pred
    fooled, pred = single.success.clone(), single.pred.clone()
    rest = torch.nonzero(~fooled).flatten()
    if len(rest):
        again = predict(classifier, adv[rest], batch_size)
        pred[rest] = again
        fooled[rest] = again != labels[rest]
    return fooled, pred


def _malt_targets(attack: AttackSpec, classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                  robust: torch.Tensor, clean_logits: torch.Tensor, norm: Norm, batch_size: int,
                  counts: torch.Tensor) -> torch.Tensor | None:
    """(N, m) MALT-ordered targets of the samples still robust (rows of the others unused), for an attack
    ranked by ``malt``; None for the logit order. Costs m gradient evaluations per ranked sample."""
    if attack.ranking != "malt":
        return None
    order = torch.zeros((len(x), min(attack.n_targets, clean_logits.shape[1] - 1)), dtype=torch.long,
                        device=x.device)
    todo = torch.nonzero(robust).flatten()
    if len(todo):
        order[todo] = malt_order(classifier, x[todo], labels[todo], clean_logits[todo], norm,
                                 n_candidates=max(attack.n_targets, MALT_CANDIDATES), batch_size=batch_size,
                                 counts=counts, idx=todo)[:, :order.shape[1]]
    return order
