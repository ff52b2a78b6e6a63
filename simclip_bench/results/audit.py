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

from dataclasses import dataclass

import pandas as pd

from simclip_bench.results.intervals import binomial_upper_bound
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
