"""Attacks and ensembles by name, as ``simclip eval --attack`` takes them.

Single attacks (paper defaults):

================  =================================================================
``apgd-ce``       APGD, cross-entropy, 100 iterations (``apgd`` is an alias)
``apgd-dlr``      APGD, DLR loss, 100 iterations
``apgd-t``        APGD-T: targeted DLR towards each of the top-9 other classes, 100 iterations each
``apgd-t-malt``   APGD-T towards the top-3 targets ranked by MALT's linearised distance (see
                  :mod:`~simclip_bench.attacks.target_ranking`), 100 iterations each
``square``        Square attack, margin loss, 5 000 queries (black-box)
``pgd``           PGD, cross-entropy, 100 steps of 2.5·eps/100 from a random start
================  =================================================================

Ensembles join single attacks with ``+``: the worst case per sample, each later attack running only on
the samples still robust. An APGD attack takes ``*K`` for K restarts (a restart runs only on the samples
still robust): ``apgd-ce*5+apgd-t`` (alias ``robustvlm``) is RobustVLM's zero-shot protocol, which runs
AutoAttack's ``version='custom'`` object with ``attacks_to_run=['apgd-ce', 'apgd-t']``, whose APGD-CE keeps
its constructor's 5 restarts (CLIP_benchmark ``metrics/zeroshot_classification.py`` in chs20/RobustVLM).
``autoattack`` runs standard AutoAttack through the reference code (pyautoattack);
``ref:<ensemble>`` runs an ensemble through the reference code, for side-by-side checks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from simclip_bench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class AttackSpec:
    """One single attack: its kind, loss and budget."""

    name: str
    kind: str  # "apgd" | "square" | "pgd"
    loss: str  # a ClassifierObjective loss
    n_iter: int
    n_targets: int = 0
    n_restarts: int = 1
    ranking: str = "logits"  # target order of a targeted attack: "logits" (AutoAttack) or "malt"

    @property
    def label(self) -> str:
        """The name as ``--attack`` writes it: ``apgd-ce``, or ``apgd-ce*5`` with 5 restarts."""
        return self.name if self.n_restarts == 1 else f"{self.name}*{self.n_restarts}"

    def config(self) -> dict:
        """The spec as a dict; ``ranking`` only when it is not the default, so older setting ids stay."""
        config = asdict(self)
        if self.ranking == "logits":
            del config["ranking"]
        return config


SINGLE_ATTACKS: dict[str, AttackSpec] = {
    "apgd-ce": AttackSpec("apgd-ce", "apgd", "ce", 100),
    "apgd-dlr": AttackSpec("apgd-dlr", "apgd", "dlr", 100),
    "apgd-t": AttackSpec("apgd-t", "apgd", "dlr-targeted", 100, n_targets=9),
    "apgd-t-malt": AttackSpec("apgd-t-malt", "apgd", "dlr-targeted", 100, n_targets=3, ranking="malt"),
    "square": AttackSpec("square", "square", "margin", 5000),
    "pgd": AttackSpec("pgd", "pgd", "ce", 100),
}
ALIASES: dict[str, str] = {"apgd": "apgd-ce"}
REFERENCE_NAMES: dict[str, str] = {"apgd-ce": "apgd-ce", "apgd-dlr": "apgd-dlr", "apgd-t": "apgd-t",
                                   "square": "square"}
NAMED_ENSEMBLES: dict[str, str] = {"robustvlm": "apgd-ce*5+apgd-t"}
MAX_RESTARTS = 100
NO_ATTACK = "none"


@dataclass(frozen=True)
class EnsembleSpec:
    """A resolved ``--attack``: ours (a list of single attacks) or the reference backend."""

    name: str
    attacks: tuple[AttackSpec, ...] = ()
    backend: str = "ours"  # "ours" | "reference"
    reference_attacks: tuple[str, ...] = ()  # for the reference backend; empty means standard AutoAttack

    @property
    def is_clean(self) -> bool:
        return self.name == NO_ATTACK

    def config(self) -> dict:
        return {"backend": self.backend, "attacks": [a.config() for a in self.attacks],
                "reference_attacks": list(self.reference_attacks) or ("standard" if self.backend == "reference"
                                                                       else [])}

    def with_iterations(self, n_iter: int) -> EnsembleSpec:
        """The same ensemble with every gradient attack at ``n_iter`` iterations (Square keeps its queries)."""
        attacks = tuple(a if a.kind == "square" else replace(a, n_iter=n_iter) for a in self.attacks)
        return EnsembleSpec(self.name, attacks, self.backend, self.reference_attacks)

    def with_targets(self, n_targets: int) -> EnsembleSpec:
        """The same ensemble with APGD-T towards ``n_targets`` classes (capped at C-1 when it runs)."""
        attacks = tuple(replace(a, n_targets=n_targets) if a.loss == "dlr-targeted" else a for a in self.attacks)
        return EnsembleSpec(self.name, attacks, self.backend, self.reference_attacks)

    def without_targeted(self) -> EnsembleSpec:
        """The ensemble minus APGD-T (for datasets with fewer than 4 classes, as RobustVLM runs 2-class ones)."""
        attacks = tuple(a for a in self.attacks if a.loss != "dlr-targeted")
        return EnsembleSpec("+".join(a.label for a in attacks) if self.backend == "ours" else self.name, attacks,
                            self.backend, tuple(r for r in self.reference_attacks if r != "apgd-t"))


def known_names() -> list[str]:
    return [NO_ATTACK, *SINGLE_ATTACKS, *ALIASES, *NAMED_ENSEMBLES, "autoattack", "apgd-ce+apgd-t",
            "apgd-ce*5+apgd-t", "ref:apgd-ce+apgd-t", "ref:apgd-ce*5+apgd-t"]


def _restarts(part: str, text: str) -> int:
    """The K of ``apgd-ce*K``: a whole number from 1 to :data:`MAX_RESTARTS`."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_RESTARTS:
        raise UserError(f"{part!r}: the restarts after '*' must be a whole number from 1 to {MAX_RESTARTS}, "
                        "e.g. apgd-ce*5")
    return int(text)


def _singles(text: str) -> tuple[AttackSpec, ...]:
    specs = []
    for part in text.split("+"):
        name, star, count = part.strip().partition("*")
        name = ALIASES.get(name.strip(), name.strip())
        if name not in SINGLE_ATTACKS:
            raise UserError(f"unknown attack {name!r}{did_you_mean(name, [*SINGLE_ATTACKS, *ALIASES])}; "
                            f"choose from {', '.join(SINGLE_ATTACKS)}, join them with '+', or use autoattack")
        spec = SINGLE_ATTACKS[name]
        if star:
            if spec.kind != "apgd":
                raise UserError(f"{part.strip()!r}: restarts ('*K') apply to the APGD attacks only")
            spec = replace(spec, n_restarts=_restarts(part.strip(), count.strip()))
        specs.append(spec)
    return tuple(specs)


def resolve_attack(text: str) -> EnsembleSpec:
    """Parse an ``--attack`` value into an :class:`EnsembleSpec`; bad names raise UserError with a suggestion."""
    text = text.strip().lower()
    text = NAMED_ENSEMBLES.get(text, text)
    if text == NO_ATTACK:
        return EnsembleSpec(NO_ATTACK)
    if text == "autoattack":
        return EnsembleSpec("autoattack", backend="reference")
    if text.startswith("ref:"):
        inner = text[4:]
        if inner == "autoattack":
            return EnsembleSpec("ref:autoattack", backend="reference")
        singles = _singles(inner)
        missing = [a.name for a in singles if a.name not in REFERENCE_NAMES]
        if missing:
            raise UserError(f"the reference backend has no {', '.join(missing)}; "
                            f"it runs {', '.join(REFERENCE_NAMES)}")
        return EnsembleSpec("ref:" + "+".join(a.label for a in singles), singles, "reference",
                            tuple(REFERENCE_NAMES[a.name] for a in singles))
    if not text:
        raise UserError(f"empty --attack; choose one of {', '.join(known_names())}")
    bare = text.partition("*")[0]
    if "+" not in text and bare not in SINGLE_ATTACKS and bare not in ALIASES:
        raise UserError(f"unknown attack {text!r}{did_you_mean(text, known_names())}; "
                        f"choose one of {', '.join(known_names())}")
    singles = _singles(text)
    return EnsembleSpec("+".join(a.label for a in singles), singles)
