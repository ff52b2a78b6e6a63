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
    subset: str = ""  # the samples both were measured on (``n/sample seed``) when the task has several subsets

    @property
    def task_label(self) -> str:
        """The task, with the subset's size when the task was measured on several (``zeroshot n=1000``)."""
        if not self.subset:
            return self.task
        n, seed = self.subset.split("/")
        return f"{self.task} n={n}" + (f" seed {seed}" if seed not in ("", "0") else "")

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
    """Every (fine-tuned entry, task, eps, subset) with its base on the board, in leaderboard order. Clean and
    robust scores are paired on the same subset of samples (:meth:`~simclip_bench.leaderboard.table.Leaderboard.
    subsets`), never a 200-sample clean score against a 1 000-sample robust one."""
    out = []
    for task in lb.tasks:
        h = lb.headlines[task]
        for subset in lb.subsets(task):
            eps_values = sorted({c.eps for c in lb.full_columns(task) if not c.is_clean and c.subset == subset})
            for entry in lb.entries:
                base = base_of(lb, entry)
                if base is None:
                    continue
                clean, base_clean = lb.worst_case(entry, task, 0.0, subset), lb.worst_case(base, task, 0.0, subset)
                for eps in eps_values:
                    adv, base_adv = lb.worst_case(entry, task, eps, subset), lb.worst_case(base, task, eps, subset)
                    if None not in (clean, base_clean, adv, base_adv):
                        out.append(Price(entry, base, task, eps, (base_clean - clean) * h.scale,
                                         (adv - base_adv) * h.scale, subset))
    return out
