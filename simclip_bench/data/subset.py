"""Fixed, paired evaluation samples: the same images for every model, from a seed.

The subset of ``n`` out of ``N`` images is the first ``n`` entries of one seeded permutation of
``range(N)``, so it is deterministic, independent of the model, and nested: the first 500 samples
of a 1 000-sample run are the 500-sample run. ``n >= N`` takes every image in order.
"""
from __future__ import annotations

import numpy as np


def fixed_subset(n_total: int, n: int, seed: int = 0) -> list[int]:
    """Indices of the evaluation samples (length ``min(n, n_total)``), in evaluation order."""
    if n >= n_total:
        return list(range(n_total))
    return np.random.default_rng(seed).permutation(n_total)[:n].tolist()
