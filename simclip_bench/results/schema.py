"""The tidy result table: one row per model x task x dataset x attack x eps x metric.

Per-sample outcomes are written beside it (``samples.csv``); every aggregate is a group-by of them.
"""
from __future__ import annotations

import math

from simclip_bench.results.identity import RESULT_KEY, SAMPLE_KEY, VLM_SAMPLE_KEY  # noqa: F401 - one place for keys

RESULT_COLUMNS: tuple[str, ...] = (
    "run_id", "created_at", "git_sha", "package_version",
    "model", "checkpoint_hash", "text_hash", "vlm_hash",
    "task", "dataset", "data_id", "data_source", "split", "n_samples", "n_requested", "sample_seed", "subset_id",
    "attack", "attack_config", "setting", "protocol", "norm", "eps", "eps_text",
    "metric", "value", "ci_low", "ci_high",
    "seconds", "device", "flags",
    "grad_evals", "audit_n", "audit_missed", "audit_miss_upper",
)
# ``n_samples``: the samples a row is computed over (the readable ones); ``n_requested``: the size of the fixed
# subset asked for. ``grad_evals``: gradient evaluations per sample (the mean over the row's samples; 0 clean;
# empty where the samples predate the column). ``audit_*`` (fast protocol rows): samples audited against the full
# protocol, how many it fooled that the fast one missed, and the 95 % upper bound of the miss rate.
# The identity columns (data_id, data_source, text_hash, vlm_hash, subset_id) and the keys:
# :mod:`simclip_bench.results.identity`.

SAMPLE_COLUMNS: tuple[str, ...] = (
    "run_id", "model", "checkpoint_hash", "text_hash", "task", "dataset", "data_id", "sample_id",
    "attack", "setting", "norm", "eps", "eps_text", "label", "clean_pred", "clean_correct", "adv_pred", "adv_correct",
    "fooled_by", "max_perturbation", "grad_evals",
)
# One row per SAMPLE_KEY: the zero-shot resume key (``tasks.zeroshot.done_keys``); a row whose key is already in
# ``samples.csv`` is not appended again (two processes on one store).
# Captioning and VQA per-sample rows (vlm_samples.csv): texts do not fit the classification columns.
VLM_SAMPLE_COLUMNS: tuple[str, ...] = (
    "run_id", "model", "checkpoint_hash", "vlm_hash", "task", "dataset", "data_id", "sample_id", "attack", "setting",
    "eps", "eps_text",
    "prompt", "references", "clean_text", "clean_score", "adv_text", "adv_score", "fooled_by", "max_perturbation",
    "grad_evals",
)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, as fractions in [0,1]."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_grad_evals(values) -> float:
    """A row's ``grad_evals``: the mean over its samples' stored counts, rounded to 0.01; NaN unless every
    sample has a count (samples stored before the column existed have none)."""
    numbers = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            return math.nan
        if math.isnan(number):
            return math.nan
        numbers.append(number)
    return round(math.fsum(numbers) / len(numbers), 2) if numbers else math.nan


def truthy(column):
    """A pandas column of stored booleans (``True``/``False``, or 1/0 as read back) as a boolean Series."""
    return column.astype(str).str.lower().isin(["true", "1", "1.0"])


def vlm_model_id(vlm_name: str, encoder_id: str) -> str:
    """The ``model`` of a captioning/VQA row: the VLM and, in brackets, the encoder it ran with."""
    return f"{vlm_name}[{encoder_id}]"


def split_vlm_model_id(model: str) -> tuple[str, str | None]:
    """``(encoder, vlm)`` of a row's ``model``; ``(model, None)`` for an encoder evaluated on its own."""
    if model.endswith("]") and "[" in model:
        i = model.index("[")
        return model[i + 1:-1], model[:i]
    return model, None
