"""The price of robustness: what each fine-tuned model paid in clean score for what it gained under attack.

For every entry whose model card names the checkpoint it was fine-tuned from (``base_checkpoint_hash``)
and whose base is on the same leaderboard, per task and l-inf eps: the clean score lost, the robust
score gained (both in the headline's displayed units, e.g. accuracy points), and their ratio, the clean
points paid per point of robustness (0 when the clean score did not drop). Robust scores are the worst
case over the task's full protocols (:meth:`~simclip_bench.leaderboard.table.Leaderboard.worst_case`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from simclip_bench.leaderboard.table import Entry, Leaderboard


@dataclass(frozen=True)
class Price:
    entry: Entry
    base: Entry
    task: str
    eps: float
    clean_drop: float  # base clean minus the entry's clean, displayed units (positive: it lost clean score)
    robust_gain: float  # the entry's robust minus the base's, displayed units

    @property
    def clean_per_robust_point(self) -> float:
        """Clean points paid per robust point gained: 0 when the clean score did not drop, NaN when the robust
        score did not rise (nothing bought)."""
        return max(self.clean_drop, 0.0) / self.robust_gain if self.robust_gain > 0 else math.nan


def base_of(lb: Leaderboard, entry: Entry) -> Entry | None:
    """The leaderboard entry ``entry`` was fine-tuned from, by checkpoint sha256, or None."""
    digest = entry.card.training.get("base_checkpoint_hash") if entry.card else None
    return next((e for e in lb.entries if digest and e.checkpoint_hash == digest and e is not entry), None)


def prices(lb: Leaderboard) -> list[Price]:
    """Every (fine-tuned entry, task, eps) with its base on the board, in leaderboard order."""
    out = []
    for task in lb.tasks:
        h = lb.headlines[task]
        eps_values = sorted({c.eps for c in lb.full_columns(task) if not c.is_clean})
        for entry in lb.entries:
            base = base_of(lb, entry)
            if base is None:
                continue
            clean, base_clean = lb.worst_case(entry, task, 0.0), lb.worst_case(base, task, 0.0)
            for eps in eps_values:
                adv, base_adv = lb.worst_case(entry, task, eps), lb.worst_case(base, task, eps)
                if None not in (clean, base_clean, adv, base_adv):
                    out.append(Price(entry, base, task, eps, (base_clean - clean) * h.scale,
                                     (adv - base_adv) * h.scale))
    return out
