"""Evaluation protocols as presets: ``--protocol robustvlm | autoattack | quick | default``.

A protocol fixes the attack, its budget, the eps list, the norm and how many fixed samples each
dataset gets. Every field can be overridden from the command line; the resolved protocol (with
the names of the overridden fields) goes into every result row's ``attack_config``.

``robustvlm`` is the zero-shot protocol of Schlarmann et al. (ICML 2024, RobustVLM), as its code runs
it (chs20/RobustVLM ``CLIP_benchmark/clip_benchmark/metrics/zeroshot_classification.py``: AutoAttack
``version='custom'`` with ``attacks_to_run=('apgd-ce', 'apgd-t')``): APGD-CE with AutoAttack's constructor
default of 5 restarts, then APGD-T (9 target classes, 1 restart), 100 iterations each, on the
still-robust points, l-inf, eps 2/255 and 4/255, 1 000 fixed samples per dataset (5 000 for ImageNet),
sample seed 0; datasets with two classes get APGD-CE only.

``fast`` spends the attack budget where it can still succeed (see :data:`FAST_ATTACK`; its number of
MALT-ranked targets grows with the class count, :func:`fast_targets`) and audits itself:
on a seeded random ``audit_fraction`` of each cell's samples it also runs the full ``apgd-ce+apgd-t``
(100 iterations, 9 targets, whatever ``--iterations``/``--n-targets`` say) and reports how many images the
full protocol fooled that the fast one missed, with an upper confidence bound on the miss rate
(:mod:`simclip_bench.results.audit`). Its rows carry the protocol name ``fast`` and stand in their own
leaderboard columns.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from simclip_bench.attacks.eps import Eps, parse_eps, unique_eps
from simclip_bench.attacks.registry import EnsembleSpec, resolve_attack
from simclip_bench.errors import UserError, check_count, did_you_mean

FAST = "fast"
FAST_ATTACK = "apgd-ce+apgd-t-malt"
FAST_ITERATIONS = 50
FAST_TARGETS = 2
MAX_FAST_TARGETS = 9  # MALT ranks the 9 most likely other classes (attacks.target_ranking.MALT_CANDIDATES)


def fast_targets(n_classes: int) -> int:
    """MALT-ranked targets of the fast protocol on ``n_classes`` classes: ``ceil(log2(C) / 2)``, at least 2 and
    at most 9 (the ranked candidates): 2 up to 16 classes, 3 up to 64, 4 up to 256, 5 up to 1 024 (ImageNet).

    Chosen from measurements (``benchmarks/fast_vs_full.py``, 500 images, 2/255 and 4/255, tiny-clip and a
    Sim-CLIP run): on 8 classes 2 targets missed 1 image in 3 000 (image, cell) pairs; on the 64 of
    ``shape-colors`` 2 targets missed 2 in 2 000 and 3 targets none. Each target costs 51 gradient evaluations
    on an image that is never fooled.
    """
    return min(MAX_FAST_TARGETS, max(FAST_TARGETS, math.ceil(math.log2(max(n_classes, 2)) / 2)))


@dataclass(frozen=True)
class Protocol:
    """An evaluation preset. Units: ``eps`` as written (pixel units), ``n_iter`` per gradient attack."""

    name: str
    description: str
    attack: str = "apgd-ce"
    n_iter: int = 100
    n_targets: int = 9
    norm: str = "linf"
    eps: tuple[str, ...] = ("4/255",)
    n_samples: int = 1000
    n_samples_per_dataset: tuple[tuple[str, int], ...] = ()
    few_class_attack: str | None = None  # attack for datasets with < 4 classes (APGD-T needs >= 4)
    sample_seed: int = 0
    attack_seed: int = 0
    audit_attack: str | None = None  # the full protocol a fast one is checked against, on audit_fraction
    targets_grow: bool = False  # APGD-T's targets from fast_targets(classes) unless --n-targets/--attack is given
    audit_fraction: float = 0.0  # of each cell's samples (seeded by sample_seed)
    overridden: tuple[str, ...] = field(default=(), compare=False)

    OVERRIDABLE = ("attack", "n_iter", "n_targets", "norm", "eps", "n_samples", "sample_seed", "attack_seed",
                   "audit_fraction")

    def override(self, **values) -> Protocol:
        """A copy with every non-None value replaced; ``n_samples`` then applies to every dataset."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = set(given) - set(self.OVERRIDABLE)
        if unknown:
            raise ValueError(f"not protocol fields: {sorted(unknown)}")
        overridden = tuple(sorted(set(self.overridden) | set(given)))
        if "eps" in given:  # an eps given twice (4/255 and 0.0156862745 too) is evaluated once
            given["eps"] = tuple(unique_eps(given["eps"]))
        if "n_samples" in given:
            given["n_samples_per_dataset"] = ()
        return dataclasses.replace(self, **given, overridden=overridden)

    def validate(self) -> None:
        for name, option in (("n_iter", "--iterations"), ("n_samples", "--n-samples"), ("n_targets", "--n-targets")):
            check_count(option, getattr(self, name))
        check_count("--sample-seed", self.sample_seed, minimum=0)
        check_count("--seed", self.attack_seed, minimum=0)
        if "audit_fraction" in self.overridden and not self.audit_attack:
            raise UserError(f"--audit-fraction: protocol {self.name!r} has no audit; it applies to --protocol fast")
        if not 0.0 <= self.audit_fraction <= 1.0:  # NaN fails too
            raise UserError(f"--audit-fraction {self.audit_fraction}: give a fraction from 0 (no audit) to 1, "
                            "e.g. 0.1")
        if self.norm not in ("linf", "l2"):
            raise UserError(f"--norm {self.norm!r}: choose linf or l2")
        spec = self.spec()
        if not spec.is_clean and not self.eps:
            raise UserError("an attack needs at least one --eps, e.g. --eps 4/255")
        self.eps_values()

    def eps_values(self) -> list[Eps]:
        try:
            return [parse_eps(e, self.norm) for e in self.eps]
        except ValueError as e:
            raise UserError(f"--eps: {e}") from None

    def spec(self) -> EnsembleSpec:
        return resolve_attack(self.attack).with_iterations(self.n_iter).with_targets(self.n_targets)

    def spec_for(self, n_classes: int) -> EnsembleSpec:
        """The attack for a dataset with ``n_classes`` classes (APGD-T needs at least 4)."""
        spec = self.spec()
        if n_classes < 4 and any(a.loss == "dlr-targeted" for a in spec.attacks):
            if self.few_class_attack:
                return resolve_attack(self.few_class_attack).with_iterations(self.n_iter)
            return spec.without_targeted()
        if self.targets_grow and not {"n_targets", "attack"} & set(self.overridden):
            return spec.with_targets(fast_targets(n_classes))
        return spec

    def audit_spec_for(self, n_classes: int) -> EnsembleSpec | None:
        """The full attack the fast one is audited against (its own budgets), or None without an audit."""
        if not self.audit_attack or self.audit_fraction == 0:
            return None
        spec = resolve_attack(self.audit_attack)
        return spec.without_targeted() if n_classes < 4 else spec

    def n_samples_for(self, dataset: str) -> int:
        return dict(self.n_samples_per_dataset).get(dataset, self.n_samples)

    def record(self) -> dict:
        """The resolved protocol as it goes into result rows."""
        audit = {"audit_attack": self.audit_attack, "audit_fraction": self.audit_fraction} if self.audit_attack else {}
        rule = {"n_targets_rule": "ceil(log2(classes)/2), 2 to 9"} if self.targets_grow else {}
        return {"protocol": self.name, "attack": self.attack, "n_iter": self.n_iter, "n_targets": self.n_targets,
                "norm": self.norm, "eps": list(self.eps), "n_samples": self.n_samples,
                "n_samples_per_dataset": dict(self.n_samples_per_dataset), "few_class_attack": self.few_class_attack,
                "sample_seed": self.sample_seed, "attack_seed": self.attack_seed, "overridden": list(self.overridden)} \
            | audit | rule


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("default", "APGD-CE, 100 iterations, eps 4/255, 1 000 fixed samples per dataset"),
    Protocol("robustvlm", "RobustVLM zero-shot: APGD-CE (5 restarts) + APGD-T (9 targets), 100 iterations each, "
             "eps 2/255 and 4/255, 1 000 samples (5 000 ImageNet), 2-class datasets APGD-CE only",
             attack="apgd-ce*5+apgd-t", eps=("2/255", "4/255"), n_samples_per_dataset=(("imagenet1k", 5000),),
             few_class_attack="apgd-ce*5"),
    Protocol("autoattack", "standard AutoAttack through the reference code (pyautoattack), eps 2/255 and 4/255, "
             "1 000 samples (5 000 ImageNet)",
             attack="autoattack", eps=("2/255", "4/255"), n_samples_per_dataset=(("imagenet1k", 5000),)),
    Protocol("quick", "smoke run: APGD-CE with 10 iterations, eps 4/255, 100 samples per dataset",
             n_iter=10, n_samples=100),
    Protocol(FAST, f"{FAST_ATTACK} ({FAST_ITERATIONS} iterations, MALT-ranked targets: {FAST_TARGETS} up to 16 "
             "classes, ceil(log2(classes)/2) above: 3 for 64, 5 for 1 000), eps 2/255 and 4/255, 1 000 samples, "
             "audited against apgd-ce+apgd-t on 10 % of them",
             attack=FAST_ATTACK, n_iter=FAST_ITERATIONS, n_targets=FAST_TARGETS, eps=("2/255", "4/255"),
             n_samples_per_dataset=(("imagenet1k", 5000),), audit_attack="apgd-ce+apgd-t", audit_fraction=0.1,
             targets_grow=True),
)}
DEFAULT_PROTOCOL = "default"


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}{did_you_mean(name, PROTOCOLS)}; choose one of "
                        f"{', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
