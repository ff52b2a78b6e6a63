"""Aggregates as group-bys of the per-sample outcomes: the tidy rows, the per-model summary, paired differences.

* :func:`cell_rows` -- accuracy rows (clean and per eps) of one (model, dataset) over its fixed sample ids;
* :func:`summary_table` -- per model and eps: every dataset's accuracy, their average (the headline
  column of the papers) and a 95 % confidence interval of that average;
* :func:`paired_differences` -- model B minus model A on identical sample ids, per dataset and averaged,
  with a 95 % confidence interval (paired, so sample difficulty cancels out).

Intervals (95 %, one method per kind of number, :mod:`simclip_bench.results.intervals`): an accuracy gets
the Wilson interval, an average over datasets the Wilson interval at the effective sample size, a paired
difference Newcombe's hybrid score interval.

Every row carries its cost, ``grad_evals``: the mean gradient evaluations per sample over its samples. A
row of a protocol with an audit (``fast``) carries the audit against the full protocol on the audited
samples (:mod:`simclip_bench.results.audit`) and, on a miss, the flag ``fast-missed(k/n)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from simclip_bench.attacks.checks import FLAG_SQUARE_BEAT_WHITE_BOX, accuracy_flags
from simclip_bench.data.unreadable import FLAG_UNREADABLE
from simclip_bench.results.audit import AuditOutcome, audit_outcome
from simclip_bench.results.identity import subset_id
from simclip_bench.results.intervals import average_interval, effective_n, paired_difference_interval
from simclip_bench.results.schema import mean_grad_evals, truthy, wilson_interval


@dataclass
class CellMeta:
    """What a (model, dataset) cell's rows say about how it was evaluated."""

    run_id: str
    created_at: str
    git_sha: str
    package_version: str
    model: str
    checkpoint_hash: str
    text_hash: str
    dataset: str
    data_id: str
    data_source: str
    split: str
    sample_seed: int
    sample_ids: list[str]  # the fixed subset asked for (unreadable images included), in order
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
    audits: dict = field(default_factory=dict)  # attacked setting -> setting of the full attack auditing it


def cell_rows(samples: pd.DataFrame, meta: CellMeta, task: str = "zeroshot") -> list[dict]:
    """Clean and robust accuracy rows of one cell, computed from its samples in the store.

    A row is over the samples of ``meta.sample_ids`` that have an outcome for its setting; its
    ``n_samples`` counts them, and ``unreadable-images(k)`` flags the k left out because their image
    could not be read (``meta.unreadable``). A sample missing for any other reason is an error.
    """
    ids = set(meta.sample_ids)
    mine = samples[(samples["model"] == meta.model) & (samples["checkpoint_hash"] == meta.checkpoint_hash)
                   & (samples["text_hash"] == meta.text_hash) & (samples["task"] == task)
                   & (samples["dataset"] == meta.dataset) & (samples["data_id"] == meta.data_id)
                   & (samples["sample_id"].isin(ids))]
    mine = mine.drop_duplicates(subset=["setting", "sample_id"], keep="first")
    common = {"run_id": meta.run_id, "created_at": meta.created_at, "git_sha": meta.git_sha,
              "package_version": meta.package_version, "model": meta.model, "checkpoint_hash": meta.checkpoint_hash,
              "text_hash": meta.text_hash, "vlm_hash": "", "task": task, "dataset": meta.dataset,
              "data_id": meta.data_id, "data_source": meta.data_source, "split": meta.split,
              "n_requested": len(meta.sample_ids), "sample_seed": meta.sample_seed,
              "subset_id": subset_id(meta.sample_ids), "protocol": meta.protocol, "device": meta.device,
              "seconds": round(meta.seconds, 2)}
    per_setting = {s: mine[mine["setting"] == s] for s in meta.settings}
    skipped = {s: _left_out(meta, ids, set(part["sample_id"].astype(str)), s) for s, part in per_setting.items()}
    n = {s: len(part) for s, part in per_setting.items()}
    clean_setting = next(s for s, (_, eps) in meta.settings.items() if eps is None)
    clean_correct = int(truthy(per_setting[clean_setting]["clean_correct"]).sum())
    robust = {s: int(truthy(per_setting[s]["adv_correct"]).sum()) for s, (_, eps) in meta.settings.items() if eps}
    by_eps = accuracy_flags(clean_correct / n[clean_setting],
                            {meta.settings[s][1].value: c / n[s] for s, c in robust.items()})
    clean_config = {k: v for k, v in meta.attack_config.items() if k == "resolved_protocol"}
    rows = [_row(common, "none", clean_config, clean_setting, "", None, clean_correct, n[clean_setting],
                 skipped[clean_setting]) | {"grad_evals": 0.0}]
    for setting, correct in robust.items():
        eps = meta.settings[setting][1]
        flags = list(meta.flags) + by_eps[eps.value] + skipped[setting]
        by_square = int((per_setting[setting]["fooled_by"].astype(str) == "square").sum())
        if meta.white_box_then_square and by_square:
            flags.append(f"{FLAG_SQUARE_BEAT_WHITE_BOX}({by_square})")
        audit = _audit(mine, per_setting[setting], meta.audits.get(setting))
        if audit and audit.flag:
            flags.append(audit.flag)
        cost = {"grad_evals": _protocol_cost(mine, per_setting[setting], meta.audits.get(setting))}
        rows.append(_row(common, meta.attack, meta.attack_config, setting, meta.norm, eps, correct, n[setting],
                         flags) | cost | _audit_columns(audit))
    return rows


def _protocol_cost(mine: pd.DataFrame, rows: pd.DataFrame, full_setting: str | None) -> float:
    """Gradient evaluations per sample of a row: the mean over its samples, plus, for a protocol with an audit, the
    audit's evaluations spread over the same samples (the audit is part of what the protocol costs: the fast
    protocol's 5x fewer evaluations were 3.5x once it was counted, and wall time follows the count)."""
    cost = mean_grad_evals(rows.get("grad_evals", []))
    if full_setting is None or cost != cost or not len(rows):
        return cost
    audited = mine[(mine["setting"] == full_setting) & mine["sample_id"].isin(set(rows["sample_id"]))]
    extra = mean_grad_evals(audited.get("grad_evals", [])) * len(audited) / len(rows) if len(audited) else 0.0
    return round(cost + extra, 2) if extra == extra else float("nan")


def _audit(mine: pd.DataFrame, fast: pd.DataFrame, full_setting: str | None) -> AuditOutcome | None:
    """The audit of one attacked setting against its full attack's samples (None without an audit)."""
    if full_setting is None:
        return None
    return audit_outcome(fast, mine[mine["setting"] == full_setting])


def _audit_columns(audit: AuditOutcome | None) -> dict:
    if audit is None:
        return {}
    return {"audit_n": audit.n, "audit_missed": audit.missed, "audit_miss_upper": round(audit.miss_upper, 6)}


def _left_out(meta: CellMeta, ids: set[str], present: set[str], setting: str) -> list[str]:
    """The unreadable-images flag of one setting's row (empty when none is left out); an id missing for
    another reason, or no sample at all, is an internal error."""
    absent = ids - present
    if absent - meta.unreadable or not present:
        raise RuntimeError(f"{meta.model} on {meta.dataset}: {len(present)} of {len(ids)} samples for setting "
                           f"{setting}")
    return [f"{FLAG_UNREADABLE}({len(absent)})"] if absent else []


def _row(common, attack, config, setting, norm, eps, correct, n, flags) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {**common, "n_samples": n, "attack": attack, "attack_config": json.dumps(config, sort_keys=True),
            "setting": setting,
            "norm": norm if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
            "metric": "accuracy", "value": correct / n, "ci_low": lo, "ci_high": hi, "flags": ";".join(flags)}


def dataset_labels(rows: pd.DataFrame) -> list[str]:
    """Each row's dataset as tables show it: its name, or ``name@<parent>/<name>`` where one name stands for several
    sources (two folders called ``val``)."""
    if "data_source" not in rows or not len(rows):
        return list(rows["dataset"])
    ids = rows.groupby("dataset")["data_source"].nunique()
    return [f"{d}@{'/'.join(s.rstrip('/').split('/')[-2:])}" if ids[d] > 1 else d
            for d, s in zip(rows["dataset"], rows["data_source"], strict=True)]


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, protocol, norm, eps): accuracy per dataset (columns), ``average`` and its 95 % interval
    (Wilson at the effective sample size: :func:`~simclip_bench.results.intervals.average_interval`).

    A dataset's value is the worst case over the attacks its rows ran at that eps, as on the leaderboard: under
    ``--protocol robustvlm`` a 2-class dataset runs ``apgd-ce*5`` where the others run ``apgd-ce*5+apgd-t``, and
    it still counts in the protocol's average. ``attack`` lists the attacks behind the row."""
    out = []
    rows = rows.assign(protocol=rows["protocol"].fillna("") if "protocol" in rows else "",
                       dataset_label=dataset_labels(rows))
    groups = rows.groupby(["model", "protocol", "norm", "eps_text"], sort=False, dropna=False)
    for (model, protocol, norm, eps_text), part in groups:
        worst = part.loc[part.groupby("dataset_label", sort=False)["value"].idxmin()]
        record = {"model": model, "protocol": protocol, "attack": "; ".join(dict.fromkeys(part["attack"])),
                  "norm": norm, "eps": eps_text}
        for _, r in worst.iterrows():
            record[r["dataset_label"]] = r["value"]
        record["average"], record["ci_low"], record["ci_high"] = average_interval(
            list(worst["value"]), list(worst["n_samples"]))
        out.append(record)
    return pd.DataFrame(out)


def paired_differences(samples: pd.DataFrame, rows: pd.DataFrame, baseline: str,
                       sample_ids: dict[str, set[str]]) -> pd.DataFrame:
    """For every other model and every (attack setting, eps): accuracy minus ``baseline``'s on identical
    sample ids (``sample_ids[dataset]``, the evaluated subset), per dataset and averaged over datasets, with
    Newcombe's 95 % interval (:func:`~simclip_bench.results.intervals.paired_difference_interval`; the average
    from the averaged 2x2 table at the effective sample size)."""
    out = []
    base_rows = rows[rows["model"] == baseline]
    for _, b in base_rows.iterrows():
        others = rows[(rows["model"] != baseline) & (rows["dataset"] == b["dataset"])
                      & (rows["data_id"] == b["data_id"]) & (rows["setting"] == b["setting"])]
        for _, o in others.iterrows():
            a = _outcomes(samples, b)
            c = _outcomes(samples, o)
            common = a.index.intersection(c.index).intersection(sorted(sample_ids.get(b["dataset"], set())))
            if len(common) == 0:
                continue
            a, c = a.loc[common], c.loc[common]
            table = [int((c & a).sum()), int((c & ~a).sum()), int((~c & a).sum()), int((~c & ~a).sum())]
            out.append({"model": o["model"], "baseline": baseline, "protocol": o.get("protocol", ""),
                        "attack": o["attack"], "norm": o["norm"],
                        "eps": o["eps_text"], "dataset": o["dataset"], "n_paired": len(common),
                        "difference": (table[1] - table[2]) / len(common),
                        **dict(zip(("ci_low", "ci_high"), paired_difference_interval(*table), strict=True)),
                        "_table": table})
    per_dataset = pd.DataFrame(out)
    if per_dataset.empty:
        return per_dataset
    averaged = []
    groups = per_dataset.groupby(["model", "protocol", "norm", "eps"], sort=False, dropna=False)
    for (model, protocol, norm, eps), part in groups:
        n = effective_n(list(part["n_paired"]))
        # the 2x2 table of the average: each dataset's shares, averaged, at the effective sample size
        shares = [sum(t[k] / len(part) / m for t, m in zip(part["_table"], part["n_paired"], strict=True))
                  for k in range(4)]
        low, high = paired_difference_interval(*(s * n for s in shares))
        averaged.append({"model": model, "baseline": baseline, "protocol": protocol,
                         "attack": "; ".join(dict.fromkeys(part["attack"])), "norm": norm, "eps": eps,
                         "dataset": "average", "n_paired": int(part["n_paired"].sum()),
                         "difference": float(part["difference"].mean()), "ci_low": low, "ci_high": high})
    return pd.concat([per_dataset.drop(columns=["_table"]), pd.DataFrame(averaged)], ignore_index=True)


def _outcomes(samples: pd.DataFrame, row: pd.Series) -> pd.Series:
    """Per-sample correctness (indexed by sample id) behind one result row."""
    part = samples[(samples["model"] == row["model"]) & (samples["checkpoint_hash"] == row["checkpoint_hash"])
                   & (samples["text_hash"] == row["text_hash"]) & (samples["dataset"] == row["dataset"])
                   & (samples["data_id"] == row["data_id"]) & (samples["setting"] == row["setting"])]
    part = part.drop_duplicates(subset=["sample_id"], keep="first").set_index("sample_id")
    column = "clean_correct" if row["attack"] == "none" else "adv_correct"
    return truthy(part[column])
