"""95 % confidence intervals: one method per kind of number, named wherever an interval is shown.

* **an accuracy** (a proportion of n samples): the Wilson score interval
  (:func:`~simclip_bench.results.schema.wilson_interval`); it never collapses to a point at 0 % or 100 %;
* **an average of D accuracies** (the summary's ``average`` over datasets): the Wilson interval of the average
  with the effective sample size ``n_eff = D² / Σ_d 1/n_d`` (:func:`average_interval`). If every dataset had
  the same accuracy p, the average's variance would be p(1-p)/n_eff; with datasets of equal size n it is the
  Wilson interval of all D·n samples pooled, and with one dataset it is that dataset's own interval. Datasets
  of different accuracy make the true variance smaller (p(1-p) is concave), so the interval is conservative;
* **a paired difference of two accuracies** (model minus baseline on the same samples): Newcombe's hybrid
  score interval for paired proportions (Newcombe 1998, method 10: the Wilson intervals of both accuracies
  combined with the phi correlation of the 2x2 table of outcomes; :func:`paired_difference_interval`). Its
  average over datasets uses the averaged 2x2 table at the same effective sample size.

The mean of per-sample scores (captioning and VQA rows) is not a proportion. **VQA accuracy** lies in
[0, 1], so its variance is at most p(1-p): the Wilson interval of the mean as a proportion of n is
conservative and stays inside [0, 1] (:func:`unit_mean_interval`). **CIDEr** has no such bound; its
interval is the normal one, mean ± 1.96 standard errors, cut at 0 (:func:`mean_interval`).

A fast protocol's **miss rate** (the audit, :mod:`simclip_bench.results.audit`) gets a one-sided 95 % upper
bound, Clopper-Pearson's exact one (:func:`binomial_upper_bound`): it holds for any true rate, also at 0
misses, where it is about 3/n (the "rule of three"). The audit draws its samples without replacement
from the cell, for which the binomial bound is conservative. A **mean of values in [0, 1]** (the pooled
audit of a run, where an image audited in several cells counts the fraction of them it was missed in) gets
the Chernoff-Hoeffding bound (:func:`bounded_mean_upper_bound`): the largest mean whose relative entropy to
the observed one is within ``ln(1/alpha)/n`` (Hoeffding 1963, Theorem 1 and section 6, which covers sampling
without replacement). At 0 it equals Clopper-Pearson's bound; above 0 it is a little wider.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from simclip_bench.results.schema import wilson_interval

Z95 = 1.96
# The method of each kind of interval, as table headers name it.
ACCURACY_CI = "Wilson"
AVERAGE_CI = "Wilson, n_eff"
PAIRED_CI = "Newcombe"
MEAN_CI = "normal"
UNIT_MEAN_CI = "Wilson of the mean"
MISS_BOUND = "one-sided 95 % Clopper-Pearson"
POOLED_MISS_BOUND = "one-sided 95 % Chernoff-Hoeffding over images"


def effective_n(sizes: Sequence[float]) -> float:
    """``D² / Σ 1/n_d`` of D sample sizes: the n of one binomial sample whose accuracy varies as their average."""
    return len(sizes) ** 2 / sum(1 / n for n in sizes)


def average_interval(accuracies: Sequence[float], sizes: Sequence[float]) -> tuple[float, float, float]:
    """The average of D accuracies (``accuracies[d]`` over ``sizes[d]`` samples) and its 95 % interval:
    Wilson at the effective sample size (module docstring)."""
    mean = statistics.fmean(accuracies)
    n = effective_n(sizes)
    return (mean, *wilson_interval(mean * n, n))


def paired_difference_interval(both: float, only_first: float, only_second: float, neither: float,
                               z: float = Z95) -> tuple[float, float]:
    """95 % interval of ``p1 - p2``, two accuracies on the same samples, from their 2x2 table of outcomes:
    ``both`` right, only the first, only the second, ``neither`` (counts; weighted counts are fine).

    Newcombe (1998), "Improved confidence intervals for the difference between binomial proportions based on
    paired data", method 10, with the phi correction of Altman et al., "Statistics with confidence" (2000).
    """
    n = both + only_first + only_second + neither
    if n <= 0:
        return (math.nan, math.nan)
    right_1, right_2 = both + only_first, both + only_second
    p1, p2 = right_1 / n, right_2 / n
    l1, u1 = wilson_interval(right_1, n, z)
    l2, u2 = wilson_interval(right_2, n, z)
    margins = right_1 * (only_second + neither) * right_2 * (only_first + neither)
    cross = both * neither - only_first * only_second
    corrected = cross - n / 2 if cross > n / 2 else cross if cross < 0 else 0.0
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, low), min(1.0, high)


def mean_interval(values: Sequence[float], z: float = Z95, lowest: float = -math.inf) -> tuple[float, float, float]:
    """Mean of per-sample scores and its normal 95 % interval, cut at ``lowest`` (the smallest score possible,
    0 for CIDEr); NaN bounds for a single value."""
    mean = statistics.fmean(values)
    half = z * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, max(lowest, mean - half), mean + half


def unit_mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-sample scores in [0, 1] (VQA accuracy) and the Wilson 95 % interval of it as a proportion
    of n: conservative, since such scores vary at most as much as 0/1 outcomes with the same mean."""
    mean = statistics.fmean(values)
    return (mean, *wilson_interval(mean * len(values), len(values)))


def binomial_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion seen ``k`` times in ``n``: the p at which
    ``P(X <= k) = 1 - confidence`` for X ~ Binomial(n, p); 1.0 when k = n, NaN when n = 0."""
    if n == 0:
        return math.nan
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    low, high = k / n, 1.0
    for _ in range(100):  # bisection: the CDF at k falls as p grows
        mid = (low + high) / 2
        if _binomial_cdf(k, n, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                                 + i * log_p + (n - i) * log_q) for i in range(k + 1)))


def bounded_mean_upper_bound(total: float, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound of the mean of ``n`` independent values in [0, 1] that sum to ``total``: the
    largest ``m`` with ``n * KL(total/n || m) <= ln(1 / (1 - confidence))`` (Chernoff-Hoeffding); 1.0 when
    ``total = n``, NaN when n = 0. With 0/1 values use :func:`binomial_upper_bound`, which is tighter."""
    if n == 0:
        return math.nan
    mean = min(max(total / n, 0.0), 1.0)
    if mean >= 1.0:
        return 1.0
    budget = math.log(1.0 / (1.0 - confidence)) / n
    low, high = mean, 1.0
    for _ in range(100):  # bisection: the divergence grows as m moves up from the mean
        mid = (low + high) / 2
        if _bernoulli_kl(mean, mid) <= budget:
            low = mid
        else:
            high = mid
    return low


def _bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats, for 0 <= p <= q < 1."""
    first = p * math.log(p / q) if p > 0 else 0.0
    second = (1 - p) * math.log((1 - p) / (1 - q)) if p < 1 else 0.0
    return first + second
