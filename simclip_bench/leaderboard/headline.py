"""The headline metric of each task: the one place that says which number a leaderboard shows.

Adding a task to the leaderboard is one line in :data:`HEADLINES`. A task present in the results
but missing here is still rendered when it reports exactly one metric (shown unscaled).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Headline:
    """How a task is summarised: ``metric`` rows, averaged over datasets, shown as ``value * scale``."""

    task: str
    metric: str
    label: str
    scale: float = 100.0
    unit: str = "%"

    def show(self, value: float) -> str:
        """The value as the tables print it: fixed one-decimal formatting, no unit."""
        return f"{value * self.scale:.1f}"


HEADLINES: dict[str, Headline] = {
    "zeroshot": Headline("zeroshot", "accuracy", "zero-shot accuracy"),
    # CIDEr is stored as pycocoevalcap returns it (about 1.0 for good captions) and shown x100, as papers do.
    "captioning": Headline("captioning", "cider", "CIDEr", unit=""),
    "vqa": Headline("vqa", "vqa_accuracy", "VQA accuracy"),
    # POPE: F1 per split (RobustVLM and LLaVA report it), averaged over the three splits as over datasets.
    "pope": Headline("pope", "f1", "POPE F1"),
    "scienceqa": Headline("scienceqa", "accuracy", "ScienceQA-IMG accuracy"),
}


def headline_for(task: str, metrics: set[str]) -> Headline | None:
    """The declared headline of ``task``, or a plain one when the task reports a single metric, else None."""
    if task in HEADLINES:
        return HEADLINES[task]
    if len(metrics) == 1:
        (metric,) = metrics
        return Headline(task, metric, metric, scale=1.0, unit="")
    return None
