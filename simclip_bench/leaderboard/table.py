"""The leaderboard as data: one entry per model, one column per task and eps, from result rows only.

A cell is the headline metric of its task at one eps under one protocol: per dataset the worst case
over the attacks run at that eps (robust accuracy is a minimum over attacks), then the mean over
datasets, as the RobustVLM tables average over datasets. The clean column is eps 0. A task evaluated
under one protocol has one robust column per eps; under several (zero-shot under ``robustvlm`` and
``autoattack``), one per protocol and eps, each naming its protocol; ``fast`` rows always stand apart.
Entries are ordered by the first task's score at its largest eps, best first, then by name, so the
order is stable.

**Settings never mix.** Rows that differ in anything but the model (another attack setting, e.g. other
iterations, or another subset of samples, e.g. 200 instead of 1 000 images) are other measurements: they
stand in columns of their own, each labelled with what tells them apart (``clean n=200``,
``4/255 robustvlm iterations=3``). A robust column's clean counterpart is the clean column of the same
subset; the price of robustness and the plots pair them that way. A dataset name that stands for several
datasets (two folders called ``val``) is shown with its source (``val@clean/val``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from simclip_bench.leaderboard.headline import HEADLINES, Headline, headline_for
from simclip_bench.leaderboard.load import with_identity_columns
from simclip_bench.results.model_cards import ModelCard
from simclip_bench.results.schema import split_vlm_model_id

LINF = "linf"


def eps_label(eps: float, norm: str = LINF) -> str:
    """``0`` -> ``clean``; ``4/255`` written as ``4/255``; other values as short decimals; non-l-inf norms named."""
    if eps == 0:
        return "clean"
    k = eps * 255
    text = f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"
    return text if norm == LINF else f"{norm} {text}"


FAST_PROTOCOL = "fast"  # rows of ``--protocol fast`` get columns of their own
# Column order of protocols within a task (others follow by name): the published protocol first.
PROTOCOL_ORDER = ("", "default", "robustvlm", "ensemble", "autoattack")


@dataclass(frozen=True, order=True)
class Column:
    """One leaderboard column: a task at one (norm, eps) under ``protocol`` (the rows' protocol; empty for
    clean, eps 0). ``named``: the label names the protocol, as it does when the task has several robust
    protocols, and always for ``--protocol fast`` rows, which never stand in a full-protocol column."""

    task: str
    norm: str
    eps: float
    protocol: str = ""
    named: bool = False
    variant: str = ""  # what tells this column from others of the same task, protocol and eps ("n=200")
    subset: str = ""  # the samples it is computed on (n and sample seed): pairs robust and clean columns
    signature: tuple = ()  # the rows' (setting, n requested, sample seed)

    @property
    def fast(self) -> bool:
        return self.protocol == FAST_PROTOCOL

    @property
    def label(self) -> str:
        return (eps_label(self.eps, self.norm) + (f" {self.protocol}" if self.named else "")
                + (f" {self.variant}" if self.variant else ""))

    @property
    def is_clean(self) -> bool:
        return self.eps == 0


@dataclass(frozen=True)
class Cell:
    """A headline value (metric units, unscaled), mean over ``datasets``, worst case over ``attacks``."""

    value: float
    ci_low: float
    ci_high: float
    attacks: tuple[str, ...]
    datasets: tuple[str, ...]
    n_samples: int


@dataclass
class Entry:
    """One leaderboard row: a model (spec + checkpoint hash), its card if any, its cells and flags."""

    model: str
    checkpoint_hash: str
    name: str
    slug: str
    card: ModelCard | None
    cells: dict[Column, Cell] = field(default_factory=dict)
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Leaderboard:
    tasks: list[str]
    headlines: dict[str, Headline]
    columns: list[Column]
    entries: list[Entry]
    datasets: dict[str, tuple[str, ...]]
    attacks: dict[str, tuple[str, ...]]
    skipped_tasks: list[str]
    provenance: dict[str, tuple[str, ...]]
    vlms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> the VLMs its encoders ran in

    def columns_of(self, task: str) -> list[Column]:
        return [c for c in self.columns if c.task == task]

    def protocols_of(self, task: str) -> list[str]:
        """The protocols of the task's robust columns, in column order."""
        return list(dict.fromkeys(c.protocol for c in self.columns_of(task) if not c.is_clean and c.protocol))

    def full_columns(self, task: str) -> list[Column]:
        """The task's clean column and its l-inf columns of full protocols (not ``fast``)."""
        return [c for c in self.columns_of(task) if c.is_clean or (c.norm == LINF and not c.fast)]

    def subsets(self, task: str) -> list[str]:
        """The subsets the task's full columns are computed on, the largest first (``[""]`` when one)."""
        found = {c.subset for c in self.full_columns(task)}
        return sorted(found, key=lambda s: (-_subset_size(s), s))

    def worst_case(self, entry: Entry, task: str, eps: float, subset: str | None = None) -> float | None:
        """The entry's headline at l-inf ``eps`` (0: clean) on ``subset`` (default: the task's largest), the
        worst case over the full protocols it was evaluated under there; None when it was not."""
        subset = self.subsets(task)[0] if subset is None else subset
        values = [entry.cells[c].value for c in self.full_columns(task)
                  if c.eps == eps and c.subset == subset and c in entry.cells]
        return min(values) if values else None

    def vlm_note(self, task: str) -> str:
        """``with the VLM tiny-vlm`` for a task run inside VLMs, else empty."""
        vlms = self.vlms.get(task, ())
        return f"with the VLM{'s' if len(vlms) > 1 else ''} {', '.join(vlms)}" if vlms else ""


def _task_order(tasks: set[str]) -> list[str]:
    declared = [t for t in HEADLINES if t in tasks]
    return declared + sorted(tasks - set(declared))


def _cell(rows: pd.DataFrame) -> Cell:
    per_dataset = rows.loc[rows.groupby("dataset", sort=True)["value"].idxmin()]
    one = len(per_dataset) == 1
    return Cell(value=float(per_dataset["value"].mean()),
                ci_low=float(per_dataset["ci_low"].iloc[0]) if one else math.nan,
                ci_high=float(per_dataset["ci_high"].iloc[0]) if one else math.nan,
                attacks=tuple(sorted(set(rows["attack"]))), datasets=tuple(per_dataset["dataset"]),
                n_samples=int(per_dataset["n_samples"].fillna(0).sum()))


def _short(source: str) -> str:
    """A data source, shortened for a column header: its last two path components."""
    return "/".join(source.rstrip("/").split("/")[-2:]) or "?"


def _subset_size(subset: str) -> int:
    try:
        return int(subset.split("/")[0])
    except ValueError:
        return 0


def _flat(config: object, prefix: str = "") -> dict[str, str]:
    """A result row's ``attack_config`` JSON as ``{dotted key: value}`` (scalars and lists as text)."""
    if isinstance(config, dict):
        out: dict[str, str] = {}
        for k, v in config.items():
            out |= _flat(v, f"{prefix}{k}." if not isinstance(v, dict) else f"{prefix}{k}.")
        return {k.rstrip("."): v for k, v in out.items()}
    return {prefix: json.dumps(config, sort_keys=True) if isinstance(config, list) else str(config)}


def _readable(row: pd.Series) -> tuple[dict[str, str], dict[str, str]]:
    """What a row's measurement is, readably: (its subset: n and sample seed; its attack setting, field by field
    from ``attack_config``, the resolved protocol's fields last)."""
    try:
        config = _flat(json.loads(row["attack_config"])) if row["attack_config"] else {}
    except (ValueError, TypeError):
        config = {}
    n = row["n_requested"] or (str(int(row["n_samples"])) if row["n_samples"] == row["n_samples"] else "")
    own = {k: v for k, v in config.items() if not k.startswith("resolved_protocol.")}
    protocol = {k.split(".")[-1]: v for k, v in config.items()  # the subset is told by n and sample seed
                if k.startswith("resolved_protocol.") and k.split(".")[-1] not in ("overridden", "n_samples",
                                                                                   "sample_seed")}
    return {"n": n, "sample seed": str(row["sample_seed"])}, {**protocol, **own}


def _variants(rows: pd.DataFrame) -> dict[tuple, str]:
    """Label of each signature among ``rows`` (one column group): empty when there is one, else the fields
    whose values tell the signatures apart (the subset's when only subsets differ; at most three), or the
    setting's hash when no field does."""
    signatures = list(dict.fromkeys(rows["signature"]))
    if len(signatures) == 1:
        return {signatures[0]: ""}
    described = {s: _readable(rows[rows["signature"] == s].iloc[0]) for s in signatures}
    same_setting = len({s[0] for s in signatures}) == 1
    parts = [0] if same_setting else [0, 1]
    fields = {s: {k: v for i in parts for k, v in d[i].items()} for s, d in described.items()}
    keys = list(dict.fromkeys(k for f in fields.values() for k in f))
    differing = [k for k in keys if len({f.get(k, "") for f in fields.values()}) > 1]
    plain = [k for k in differing if not any(str(f.get(k, "")).startswith(("[", "{")) for f in fields.values())]
    differing = (plain or differing)[:3]  # scalars say it shortly; a whole attack list only when nothing else does
    return {s: ", ".join(f"{k}={fields[s].get(k, '-')}" for k in differing) if differing else
            f"setting {s[0][:6]}" for s in signatures}


def _protocol_rank(protocol: str) -> tuple[int, str]:
    return (PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER), protocol)


def _flags(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted({f for text in rows["flags"] for f in str(text).split(";") if f}))


def _sort_key(entry: Entry, first: list[Column]) -> tuple:
    scores = [entry.cells[c].value if c in entry.cells else -math.inf for c in reversed(first)]
    return (*[-s for s in scores], entry.name, entry.checkpoint_hash)


def build_leaderboard(results: pd.DataFrame, cards: dict[tuple[str, str], ModelCard]) -> Leaderboard:
    """Reduce checked result rows (see :func:`simclip_bench.leaderboard.load.load_results`) to a leaderboard."""
    results = with_identity_columns(results)
    headlines: dict[str, Headline] = {}
    skipped = []
    for task in _task_order(set(results["task"])):
        headline = headline_for(task, set(results.loc[results["task"] == task, "metric"]))
        if headline is None:
            skipped.append(task)
        else:
            headlines[task] = headline
    rows = results[[headlines.get(t) is not None and m == headlines[t].metric
                    for t, m in zip(results["task"], results["metric"], strict=False)]].copy()
    rows.loc[rows["eps"] == 0, "norm"] = ""
    # Captioning/VQA rows name "vlm[encoder]": an entry is an encoder, whatever task or VLM scored it.
    rows["source_model"] = rows["model"]
    # a dataset name that stands for several datasets is shown with the start of its data_id
    sources = rows.groupby(["task", "dataset"])["data_source"].transform("nunique")  # within a task
    rows["dataset"] = [f"{d}@{_short(s)}" if n > 1 else d
                       for d, s, n in zip(rows["dataset"], rows["data_source"], sources, strict=False)]
    split = [split_vlm_model_id(m) for m in rows["model"]]
    rows["model"] = [encoder for encoder, _ in split]
    rows["vlm"] = [vlm or "" for _, vlm in split]
    protocol = rows["protocol"].fillna("").astype(str) if "protocol" in rows else pd.Series("", index=rows.index)
    rows["protocol"] = protocol.where(rows["eps"] > 0, "")  # clean is clean, whatever protocol
    tasks = [t for t in headlines if (rows["task"] == t).any()]
    several = {t for t in tasks if len(set(rows.loc[(rows["task"] == t) & (rows["eps"] > 0), "protocol"])
                                       - {FAST_PROTOCOL}) > 1}
    rows["named"] = [p == FAST_PROTOCOL or (t in several and p != "") for t, p in zip(rows["task"], rows["protocol"],
                                                                                     strict=False)]
    # the subset a row is computed on, and its full signature: rows of different signatures never share a column
    n_req = [r if r else (str(int(n)) if n == n else "") for r, n in zip(rows["n_requested"], rows["n_samples"],
                                                                         strict=False)]
    rows["subset"] = [f"{n}/{s}" if n else "" for n, s in zip(n_req, rows["sample_seed"], strict=False)]
    rows["signature"] = list(zip(rows["setting"], rows["subset"], strict=False))
    group = ["task", "norm", "eps", "protocol"]
    rows["variant"] = ""
    for _, part in rows.groupby(group, sort=False):
        labels = _variants(part)
        rows.loc[part.index, "variant"] = [labels[s] for s in part["signature"]]
    several_subsets = {t for t in tasks if rows.loc[rows["task"] == t, "subset"].nunique() > 1}
    rows["subset"] = [s if t in several_subsets else "" for t, s in zip(rows["task"], rows["subset"], strict=False)]
    columns = sorted({Column(t, n, float(e), p, bool(named), v, s, sig) for t, n, e, p, named, v, s, sig
                      in zip(rows["task"], rows["norm"], rows["eps"], rows["protocol"], rows["named"], rows["variant"],
                             rows["subset"], rows["signature"], strict=False)},
                     key=lambda c: (tasks.index(c.task), c.fast, _protocol_rank(c.protocol), c.norm != "",
                                    c.norm != LINF, c.norm, -_subset_size(c.subset), c.subset, c.eps, c.variant))
    entries = []
    for (model, digest), mrows in rows.groupby(["model", "checkpoint_hash"], sort=True):
        card = next((cards[k] for k in [(model, digest)] + [(m, digest) for m in sorted(set(mrows["source_model"]))]
                     if k in cards), None)
        entry = Entry(model, digest, card.name if card else model, card.slug if card else "", card)
        for col in columns:
            sel = mrows[(mrows["task"] == col.task) & (mrows["norm"] == col.norm) & (mrows["eps"] == col.eps)
                        & (mrows["protocol"] == col.protocol) & (mrows["signature"] == col.signature)]
            if len(sel):
                entry.cells[col] = _cell(sel)
        entry.flags = {t: _flags(mrows[mrows["task"] == t]) for t in tasks}
        entries.append(entry)
    _disambiguate(entries)
    # rank by the first task's full-protocol columns (largest eps first), fast columns only after them
    first = sorted((c for c in columns if c.task == tasks[0]), key=lambda c: not c.fast) if tasks else []
    entries.sort(key=lambda e: _sort_key(e, first))
    return Leaderboard(
        tasks=tasks, headlines={t: headlines[t] for t in tasks}, columns=columns, entries=entries,
        datasets={t: tuple(sorted(set(rows.loc[rows["task"] == t, "dataset"]))) for t in tasks},
        attacks={t: tuple(sorted(set(rows.loc[(rows["task"] == t) & (rows["eps"] > 0), "attack"]))) for t in tasks},
        skipped_tasks=skipped,
        provenance={k: tuple(sorted(set(results[k]))) for k in ("run_id", "git_sha", "package_version")},
        vlms={t: tuple(sorted(set(rows.loc[rows["task"] == t, "vlm"]) - {""})) for t in tasks})


def _disambiguate(entries: list[Entry]) -> None:
    """Two entries with one name (a model re-trained in place) get the start of their hash appended."""
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.name] = seen.get(e.name, 0) + 1
    for e in entries:
        if seen[e.name] > 1:
            e.name = f"{e.name} [{e.checkpoint_hash[:8]}]"
        if not e.slug:
            e.slug = ModelCard(e.model, e.checkpoint_hash, e.name, "", "").slug
