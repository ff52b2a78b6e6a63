"""The audit of a fast protocol: on the same samples, how often did the full protocol fool an image that
the fast one left robust?

On an audited sample both protocols have a per-sample outcome in the store. A *miss* is a sample the
full protocol fooled and the fast one did not: exactly the samples by which the fast robust accuracy
overstates the full one. Over the audited samples the miss count k of n gives a one-sided 95 % upper
bound on the miss rate of the whole cell (:func:`~simclip_bench.results.intervals.binomial_upper_bound`),
which is how many points the fast robust accuracy may overstate the full one. A row with a miss gets
the flag ``fast-missed(k/n)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from simclip_bench.results.intervals import (
    MISS_BOUND,
    POOLED_MISS_BOUND,
    binomial_upper_bound,
    bounded_mean_upper_bound,
)
from simclip_bench.results.schema import truthy

FLAG_FAST_MISSED = "fast-missed"


@dataclass(frozen=True)
class AuditOutcome:
    """``n`` audited samples; ``missed``: fooled by the full protocol only; ``miss_upper``: 95 % upper bound
    of the miss rate (a fraction)."""

    n: int
    missed: int
    miss_upper: float

    @property
    def flag(self) -> str | None:
        return missed_flag(self.missed, self.n)


def missed_flag(missed: int, n: int) -> str | None:
    """``fast-missed(k/n)`` when the full protocol fooled k of the n audited samples that the fast one missed."""
    return f"{FLAG_FAST_MISSED}({missed}/{n})" if missed else None


def audit_outcome(fast: pd.DataFrame, full: pd.DataFrame) -> AuditOutcome:
    """Compare per-sample outcomes (``sample_id``, ``adv_correct``) of the fast and the full protocol on
    the samples both have (the audited ones)."""
    both = fast[["sample_id", "adv_correct"]].merge(full[["sample_id", "adv_correct"]], on="sample_id",
                                                     suffixes=("_fast", "_full"))
    missed = int((truthy(both["adv_correct_fast"]) & ~truthy(both["adv_correct_full"])).sum())
    return AuditOutcome(n=len(both), missed=missed, miss_upper=binomial_upper_bound(missed, len(both)))


@dataclass(frozen=True)
class PooledAudit:
    """The audit of a whole run: ``cells`` audited rows over ``images`` distinct audited images (summed over
    datasets), ``audited`` (cell, image) pairs of which ``missed`` were misses; ``miss_upper``: the one-sided
    95 % upper bound of the run's average miss rate (a fraction); ``method`` names the bound."""

    cells: int
    images: int
    audited: int
    missed: int
    miss_upper: float
    method: str

    def line(self) -> str:
        """E.g. ``whole run, 4 cells: 1 miss in 200 audited (cell, image) pairs of 50 images; ...``."""
        return (f"whole run, {self.cells} cell{'s' * (self.cells != 1)}: {self.missed} fooled that the fast "
                f"protocol missed, in {self.audited} audited (cell, image) pairs of {self.images} images; on "
                f"average over the run its robust accuracy overstates the full one by at most "
                f"{100 * self.miss_upper:.1f} points ({self.method})")


def pooled_audit(rows: Sequence[dict]) -> PooledAudit | None:
    """One bound over every audited row of a run (``audit_n``, ``audit_missed``; see the module docstring);
    None when no row was audited. Rows are grouped by ``dataset``: rows of one dataset are taken to audit the
    same images, which is right for one run and errs wide for anything else."""
    audited = [r for r in rows if _count(r.get("audit_n"))]
    if not audited:
        return None
    by_dataset: dict[str, list[dict]] = {}
    for row in audited:
        by_dataset.setdefault(str(row["dataset"]), []).append(row)
    images = sum(max(_count(r["audit_n"]) for r in group) for group in by_dataset.values())
    # each image's miss fraction over its dataset's cells, summed: a dataset's misses over its cell count
    fractions = [sum(_count(r["audit_missed"]) for r in group) / len(group) for group in by_dataset.values()]
    missed = sum(_count(r["audit_missed"]) for r in audited)
    if all(len(group) == 1 for group in by_dataset.values()):
        upper, method = binomial_upper_bound(missed, images), MISS_BOUND
    else:
        upper, method = bounded_mean_upper_bound(math.fsum(fractions), images), POOLED_MISS_BOUND
    return PooledAudit(cells=len(audited), images=images, audited=sum(_count(r["audit_n"]) for r in audited),
                       missed=missed, miss_upper=upper, method=method)


def audit_table(rows: Sequence[dict], pooled: PooledAudit) -> pd.DataFrame:
    """``audit.csv``: one row per audited cell (``scope`` ``cell``) and the run's pooled bound (``scope``
    ``run``): cells, images, audited pairs, misses, the upper bound of the miss rate and its method."""
    cells = [{"scope": "cell", "model": r["model"], "dataset": r["dataset"], "attack": r["attack"],
              "eps_text": r["eps_text"], "cells": 1, "images": _count(r["audit_n"]), "audited": _count(r["audit_n"]),
              "missed": _count(r["audit_missed"]), "miss_upper": round(float(r["audit_miss_upper"]), 6),
              "method": MISS_BOUND} for r in rows if _count(r.get("audit_n"))]
    run = {"scope": "run", "model": "", "dataset": "", "attack": "", "eps_text": "", "cells": pooled.cells,
           "images": pooled.images, "audited": pooled.audited, "missed": pooled.missed,
           "miss_upper": round(pooled.miss_upper, 6), "method": pooled.method}
    return pd.DataFrame([*cells, run])


def _count(value: object) -> int:
    """A stored count (int, float or text; empty and NaN are 0)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(number) else int(number)


def audit_line(row: dict, full_attack: str) -> str:
    """E.g. ``50 samples re-attacked with apgd-ce+apgd-t: 0 fooled that the fast protocol missed; ...``."""
    flag = missed_flag(row["audit_missed"], row["audit_n"])
    return (f"{flag + ': ' if flag else ''}{row['audit_n']} samples re-attacked with {full_attack}: "
            f"{row['audit_missed']} fooled that the fast protocol missed; its robust accuracy overstates the full "
            f"one by at most {100 * row['audit_miss_upper']:.1f} points ({MISS_BOUND})")
