"""Aggregates as group-bys of the per-sample outcomes: the tidy rows, the per-model summary, paired differences.

* :func:`cell_rows` -- accuracy rows (clean and per eps) of one (model, dataset) over its fixed sample ids;
* :func:`summary_table` -- per model and eps: every dataset's accuracy, their average (the headline
  column of the papers) and a 95 % confidence interval of that average;
* :func:`paired_differences` -- model B minus model A on identical sample ids, per dataset and averaged,
  with a 95 % confidence interval (paired, so sample difficulty cancels out).

Intervals: a dataset's accuracy has variance p(1-p)/n (the rows also carry Wilson intervals); the
average over D datasets has variance sum(var_d)/D^2, and the interval is the normal one, +/- 1.96 sd.
A paired difference per dataset has variance var(a_i - b_i)/n.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from simclip_bench.attacks.checks import FLAG_SQUARE_BEAT_WHITE_BOX, accuracy_flags
from simclip_bench.data.unreadable import FLAG_UNREADABLE
from simclip_bench.results.schema import wilson_interval

Z95 = 1.96


@dataclass
class CellMeta:
    """What a (model, dataset) cell's rows say about how it was evaluated."""

    run_id: str
    created_at: str
    git_sha: str
    package_version: str
    model: str
    checkpoint_hash: str
    dataset: str
    split: str
    sample_seed: int
    sample_ids: list[str]
    attack: str
    attack_config: dict
    protocol: str
    norm: str
    settings: dict  # setting id -> (attack name, Eps or None)
    device: str
    seconds: float = 0.0
    flags: list[str] = field(default_factory=list)
    white_box_then_square: bool = False
    unreadable: set[str] = field(default_factory=set)  # sample ids left out: their image could not be read


def cell_rows(samples: pd.DataFrame, meta: CellMeta, task: str = "zeroshot") -> list[dict]:
    """Clean and robust accuracy rows of one cell, computed from its samples in the store.

    A row is over the samples of ``meta.sample_ids`` that have an outcome for its setting; its
    ``n_samples`` counts them, and ``unreadable-images(k)`` flags the k left out because their image
    could not be read (``meta.unreadable``). A sample missing for any other reason is an error.
    """
    ids = set(meta.sample_ids)
    mine = samples[(samples["model"] == meta.model) & (samples["checkpoint_hash"] == meta.checkpoint_hash)
                   & (samples["task"] == task) & (samples["dataset"] == meta.dataset)
                   & (samples["sample_id"].astype(str).isin(ids))]
    mine = mine.drop_duplicates(subset=["setting", "sample_id"], keep="first")
    common = {"run_id": meta.run_id, "created_at": meta.created_at, "git_sha": meta.git_sha,
              "package_version": meta.package_version, "model": meta.model, "checkpoint_hash": meta.checkpoint_hash,
              "task": task, "dataset": meta.dataset, "split": meta.split, "sample_seed": meta.sample_seed,
              "protocol": meta.protocol, "device": meta.device, "seconds": round(meta.seconds, 2)}
    per_setting = {s: mine[mine["setting"] == s] for s in meta.settings}
    skipped = {s: _left_out(meta, ids, set(part["sample_id"].astype(str)), s) for s, part in per_setting.items()}
    n = {s: len(part) for s, part in per_setting.items()}
    clean_setting = next(s for s, (_, eps) in meta.settings.items() if eps is None)
    clean_correct = int(_truth(per_setting[clean_setting]["clean_correct"]).sum())
    robust = {s: int(_truth(per_setting[s]["adv_correct"]).sum()) for s, (_, eps) in meta.settings.items() if eps}
    by_eps = accuracy_flags(clean_correct / n[clean_setting],
                            {meta.settings[s][1].value: c / n[s] for s, c in robust.items()})
    clean_config = {k: v for k, v in meta.attack_config.items() if k == "resolved_protocol"}
    rows = [_row(common, "none", clean_config, clean_setting, "", None, clean_correct, n[clean_setting],
                 skipped[clean_setting])]
    for setting, correct in robust.items():
        eps = meta.settings[setting][1]
        flags = list(meta.flags) + by_eps[eps.value] + skipped[setting]
        by_square = int((per_setting[setting]["fooled_by"].astype(str) == "square").sum())
        if meta.white_box_then_square and by_square:
            flags.append(f"{FLAG_SQUARE_BEAT_WHITE_BOX}({by_square})")
        rows.append(_row(common, meta.attack, meta.attack_config, setting, meta.norm, eps, correct, n[setting],
                         flags))
    return rows


def _left_out(meta: CellMeta, ids: set[str], present: set[str], setting: str) -> list[str]:
    """The unreadable-images flag of one setting's row (empty when none is left out); an id missing for
    another reason, or no sample at all, is an internal error."""
    absent = ids - present
    if absent - meta.unreadable or not present:
        raise RuntimeError(f"{meta.model} on {meta.dataset}: {len(present)} of {len(ids)} samples for setting "
                           f"{setting}")
    return [f"{FLAG_UNREADABLE}({len(absent)})"] if absent else []


def _truth(column: pd.Series) -> pd.Series:
    return column.astype(str).str.lower().isin(["true", "1", "1.0"])


def _row(common, attack, config, setting, norm, eps, correct, n, flags) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {**common, "n_samples": n, "attack": attack, "attack_config": json.dumps(config, sort_keys=True),
            "setting": setting,
            "norm": norm if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
            "metric": "accuracy", "value": correct / n, "ci_low": lo, "ci_high": hi, "flags": ";".join(flags)}


def _normal_ci(mean: float, variance: float) -> tuple[float, float]:
    half = Z95 * math.sqrt(max(variance, 0.0))
    return mean - half, mean + half


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, attack, eps): accuracy per dataset (columns), ``average`` and its CI."""
    out = []
    for (model, attack, eps_text), part in rows.groupby(["model", "attack", "eps_text"], sort=False):
        record = {"model": model, "attack": attack, "eps": eps_text}
        variance = 0.0
        for _, r in part.iterrows():
            record[r["dataset"]] = r["value"]
            variance += r["value"] * (1 - r["value"]) / r["n_samples"]
        d = len(part)
        mean = float(part["value"].mean())
        record["average"] = mean
        record["ci_low"], record["ci_high"] = _normal_ci(mean, variance / d**2)
        out.append(record)
    return pd.DataFrame(out)


def paired_differences(samples: pd.DataFrame, rows: pd.DataFrame, baseline: str,
                       sample_ids: dict[str, set[str]]) -> pd.DataFrame:
    """For every other model and every (attack setting, eps): accuracy minus ``baseline``'s on identical
    sample ids (``sample_ids[dataset]``, the evaluated subset), per dataset and averaged over datasets,
    with 95 % confidence intervals."""
    out = []
    base_rows = rows[rows["model"] == baseline]
    for _, b in base_rows.iterrows():
        others = rows[(rows["model"] != baseline) & (rows["dataset"] == b["dataset"])
                      & (rows["setting"] == b["setting"])]
        for _, o in others.iterrows():
            a = _outcomes(samples, b)
            c = _outcomes(samples, o)
            common = a.index.intersection(c.index).intersection(sorted(sample_ids.get(b["dataset"], set())))
            if len(common) == 0:
                continue
            diff = c.loc[common].astype(float) - a.loc[common].astype(float)
            var = float(diff.var(ddof=1)) / len(common) if len(common) > 1 else 0.0
            out.append({"model": o["model"], "baseline": baseline, "attack": o["attack"], "eps": o["eps_text"],
                        "dataset": o["dataset"], "n_paired": len(common), "difference": float(diff.mean()),
                        "variance": var})
    table = pd.DataFrame(out)
    if table.empty:
        return table
    averaged = []
    for (model, attack, eps), part in table.groupby(["model", "attack", "eps"], sort=False):
        d = len(part)
        mean = float(part["difference"].mean())
        lo, hi = _normal_ci(mean, float(part["variance"].sum()) / d**2)
        averaged.append({"model": model, "baseline": baseline, "attack": attack, "eps": eps, "dataset": "average",
                         "n_paired": int(part["n_paired"].sum()), "difference": mean, "variance": float("nan"),
                         "ci_low": lo, "ci_high": hi})
    per_dataset = table.assign(ci_low=[_normal_ci(m, v)[0] for m, v in zip(table["difference"], table["variance"],
                                                                              strict=True)],
                               ci_high=[_normal_ci(m, v)[1] for m, v in zip(table["difference"], table["variance"],
                                                                              strict=True)])
    return pd.concat([per_dataset, pd.DataFrame(averaged)], ignore_index=True).drop(columns=["variance"])


def _outcomes(samples: pd.DataFrame, row: pd.Series) -> pd.Series:
    """Per-sample correctness (indexed by sample id) behind one result row."""
    part = samples[(samples["model"] == row["model"]) & (samples["checkpoint_hash"] == row["checkpoint_hash"])
                   & (samples["dataset"] == row["dataset"]) & (samples["setting"] == row["setting"])]
    part = part.drop_duplicates(subset=["sample_id"], keep="first").set_index("sample_id")
    column = "clean_correct" if row["attack"] == "none" else "adv_correct"
    return _truth(part[column])
