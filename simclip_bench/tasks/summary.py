"""One result row's number: a metric's value over the evaluated samples and its 95 % interval."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simclip_bench.results.intervals import mean_interval, unit_mean_interval


@dataclass(frozen=True)
class MetricValue:
    """``value`` of ``metric`` (on the metric's own scale) with its 95 % interval (NaN where none is defined)."""

    metric: str
    value: float
    ci_low: float
    ci_high: float


def mean_metric(metric: str, scores: Sequence[float], bounded: bool) -> MetricValue:
    """The mean of per-sample scores: a conservative Wilson interval for scores in [0, 1] (``bounded``), else
    the normal interval cut at 0 (CIDEr)."""
    mean, lo, hi = unit_mean_interval(scores) if bounded else mean_interval(scores, lowest=0.0)
    return MetricValue(metric, mean, lo, hi)
