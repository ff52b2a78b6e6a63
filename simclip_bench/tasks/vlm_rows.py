"""A VLM evaluation's rows in the store: the per-sample rows already there for one VLM, encoder and dataset, the
setting id of a configuration, and the result rows of a summary.

A per-sample row's identity is every column of :data:`~simclip_bench.results.identity.VLM_SAMPLE_KEY`: the
encoder (name and weights' hash), the rest of the VLM (``vlm_hash``), the task, the dataset (name and
``data_id``), the setting and the sample. :func:`stored_samples` matches all of them, so a row is reused only
for the identical measurement.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from simclip_bench.attacks.eps import Eps
from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.results.schema import RESULT_COLUMNS
from simclip_bench.results.store import VLM_SAMPLES_FILE, read_rows
from simclip_bench.tasks.summary import MetricValue
from simclip_bench.vlm.base import LoadedVLM


def setting_id(config: dict) -> str:
    """The 12-hex-digit id of a configuration (sorted JSON): a row's ``setting``."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def stored_samples(out: Path, loaded: LoadedVLM, task: str, dataset: VLMDataset) -> dict[str, dict[str, dict]]:
    """This VLM and encoder's stored per-sample rows on ``dataset``: setting -> sample id -> row (the first row of
    a key). Every identity column but setting and sample is matched (:mod:`simclip_bench.results.identity`)."""
    frame = read_rows(out, VLM_SAMPLES_FILE)
    if frame is None:
        return {}
    mine = frame[(frame["model"] == loaded.model_id) & (frame["checkpoint_hash"] == loaded.checkpoint_hash)
                 & (frame["vlm_hash"] == loaded.vlm_hash) & (frame["task"] == task)
                 & (frame["dataset"] == dataset.name) & (frame["data_id"] == dataset.data_id)]
    out_rows: dict[str, dict[str, dict]] = {}
    for row in mine.to_dict("records"):
        out_rows.setdefault(row["setting"], {}).setdefault(row["sample_id"], row)
    return out_rows


def done_samples(out: Path, loaded: LoadedVLM, task: str, dataset: VLMDataset) -> set[tuple[str, str]]:
    """(setting, sample id) pairs already in the store for this VLM, encoder and dataset."""
    return {(setting, sid) for setting, rows in stored_samples(out, loaded, task, dataset).items() for sid in rows}


def result_rows(common: dict, attack: str, config: dict, eps: Eps | None, values: Sequence[MetricValue],
                seconds: float, protocol: str) -> list[dict]:
    """One result row per metric of a summary (clean when ``eps`` is None)."""
    # A clean row's setting is "" unless its config says how it was made or scored (VQA metric, POPE split, ...).
    setting = setting_id({**config, "eps": eps.value, "norm": "linf"}) if eps else setting_id(config) if config else ""
    out = []
    for v in values:
        row = {**common, "attack": attack, "attack_config": json.dumps(config, sort_keys=True), "setting": setting,
               "protocol": protocol if eps else "", "norm": "linf" if eps else "", "eps": eps.value if eps else 0.0,
               "eps_text": eps.text if eps else "0", "metric": v.metric, "value": v.value, "ci_low": v.ci_low,
               "ci_high": v.ci_high, "seconds": round(seconds, 2), "grad_evals": 0.0}
        out.append({c: row.get(c, "") for c in RESULT_COLUMNS})
    return out
