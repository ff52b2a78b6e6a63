"""The tables ``simclip eval`` prints: zero-shot rows, captioning/VQA rows, the summary over datasets, the paired
differences, and the images left out. Every user-given string (model specs, folder names) is escaped before it
reaches rich markup; each interval column names its method (:mod:`simclip_bench.results.intervals`); the cost
column is per sample, and an attack that had nothing to attack says so."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from simclip_bench.cli.app import stdout
from simclip_bench.results.intervals import ACCURACY_CI, AVERAGE_CI, MEAN_CI, PAIRED_CI, UNIT_MEAN_CI

GRAD_EVALS = "grad evals / sample"


def print_vlm_rows(task: str, dataset: str, vqa_metric: str, result, scienceqa_prompt: str = "") -> None:
    """The rows of a ``simclip eval --task captioning|vqa|pope|scienceqa`` run (POPE: one row per split and
    metric)."""
    metric = {"captioning": "CIDEr-D ×100", "vqa": f"VQA accuracy % ({vqa_metric} metric)",
              "pope": "% (LLaVA's eval_pope.py)", "scienceqa": f"accuracy % ({scienceqa_prompt} prompt)"}[task]
    table = Table(title=escape(f"{task} on {dataset} (n={result.rows[0]['n_samples']}), {metric}"))
    interval = (MEAN_CI if task == "captioning" else f"{UNIT_MEAN_CI}; F1: bootstrap" if task == "pope"
                else UNIT_MEAN_CI)  # as results/intervals.py and tasks/pope.py compute them
    several = task == "pope"  # one row per split and metric
    for col in ("model", *(("dataset", "metric") if several else ()), "attack", "eps", "score",
                f"95% CI ({interval})", "seconds", GRAD_EVALS):
        table.add_column(col, justify="left" if col in ("model", "dataset", "metric", "attack") else "right")
    for r in result.rows:
        idle = _nothing_attacked(r)
        table.add_row(escape(r["model"]), *((escape(r["dataset"]), r["metric"]) if several else ()), r["attack"],
                      _eps_label(r["eps_text"], r["norm"]), f"{100 * r['value']:.1f}",
                      _interval(r["ci_low"], r["ci_high"]), f"{r['seconds']:.0f}{' *' if idle else ''}",
                      _cost(r.get("grad_evals")) + (" *" if idle else ""))
    stdout.print(table)
    if any(_nothing_attacked(r) for r in result.rows):
        stdout.print("* nothing to attack: every sample's clean score was already below the attack's stopping "
                     "threshold (the clean output is the ensemble's first run), so no attack ran", soft_wrap=True)
    stdout.print(f"results: {result.results_path}  per-sample texts: {result.samples_path}", markup=False)


def print_unreadable(result, shown: int = 5) -> None:
    """The images left out (``--on-error skip``): how many, and the first ``shown`` of them."""
    if not result.unreadable:
        return
    stdout.print(f"[yellow]{len(result.unreadable)} unreadable image(s) left out of every accuracy[/] "
                 "(n counts the rest; --on-error fail stops at the first):", highlight=False, soft_wrap=True)
    for line in result.unreadable[:shown]:
        stdout.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if len(result.unreadable) > shown:
        stdout.print(f"  ... and {len(result.unreadable) - shown} more")


def _eps_label(eps_text, norm) -> str:
    """``4/255 (linf)``, ``0.5 (l2)``; a clean row (no norm) keeps its ``0``."""
    return f"{eps_text} ({norm})" if isinstance(norm, str) and norm else str(eps_text)


def _interval(low: float, high: float, signed: bool = False) -> str:
    """An interval in percent, as every table prints it (one decimal, like the numbers themselves)."""
    if signed:
        return f"{100 * low:+.1f} to {100 * high:+.1f}"
    return f"{100 * low:.1f}–{100 * high:.1f}"


def print_rows(result) -> None:
    """The zero-shot rows: one per model, dataset, attack and eps."""
    table = Table(title=f"zero-shot accuracy, protocol {result.protocol.name}")
    for col in ("model", "dataset", "attack", "eps", "n", "accuracy", f"95% CI ({ACCURACY_CI})", GRAD_EVALS):
        table.add_column(col, justify="left" if col in ("model", "dataset", "attack") else "right")
    for r in result.rows:
        table.add_row(escape(r["model"]), escape(r["dataset"]), r["attack"], _eps_label(r["eps_text"], r["norm"]),
                      str(r["n_samples"]), f"{100 * r['value']:.1f}%", _interval(r["ci_low"], r["ci_high"]),
                      _cost(r.get("grad_evals")) + (" *" if _nothing_attacked(r) else ""))
    stdout.print(table)
    if any(_nothing_attacked(r) for r in result.rows):
        stdout.print("* nothing to attack: every sample was already misclassified clean, so no attack ran",
                     soft_wrap=True)


def _cost(grad_evals) -> str:
    """Gradient evaluations per sample, e.g. ``412.6``; ``-`` where unknown."""
    return "-" if grad_evals is None or grad_evals != grad_evals else f"{grad_evals:.1f}"


def _nothing_attacked(row: dict) -> bool:
    """An attack row whose samples cost no gradient evaluation: none of them was attacked."""
    return row.get("attack") != "none" and row.get("grad_evals") == 0


def print_summary(result) -> None:
    """With several datasets: per model and eps, every dataset's accuracy and their average."""
    summary = result.summary
    if summary.empty or len({(r["dataset"], r["data_id"]) for r in result.rows}) < 2:
        return
    datasets = [c for c in summary.columns
                if c not in ("model", "protocol", "attack", "norm", "eps", "average", "ci_low", "ci_high")]
    table = Table(title="summary: average over datasets")
    for col in ("model", "attack", "eps", *datasets, "average", f"95% CI ({AVERAGE_CI})"):
        table.add_column(escape(col), justify="left" if col in ("model", "attack") else "right")
    for _, r in summary.iterrows():
        table.add_row(escape(r["model"]), escape(r["attack"]), _eps_label(r["eps"], r["norm"]),
                      *[f"{100 * r[d]:.1f}" for d in datasets], f"{100 * r['average']:.1f}",
                      _interval(r["ci_low"], r["ci_high"]))
    stdout.print(table)


def print_paired(result) -> None:
    """With several models: each model minus the first on the same samples (the average over datasets when
    there are several; paired.csv has every dataset)."""
    paired = result.paired
    if paired.empty:
        return
    n_datasets = len(set(paired["dataset"]) - {"average"})
    rows = paired[paired["dataset"] == "average"] if n_datasets > 1 else paired[paired["dataset"] != "average"]
    where = f"average over {n_datasets} datasets" if n_datasets > 1 else str(rows["dataset"].iloc[0])
    table = Table(title=escape(f"paired difference vs {paired['baseline'].iloc[0]} on the same samples ({where})"))
    for col in ("model", "attack", "eps", "n", "difference", f"95% CI ({PAIRED_CI})"):
        table.add_column(col, justify="left" if col in ("model", "attack") else "right")
    for _, r in rows.iterrows():
        table.add_row(escape(r["model"]), escape(r["attack"]), _eps_label(r["eps"], r["norm"]), str(r["n_paired"]),
                      f"{100 * r['difference']:+.1f}", _interval(r["ci_low"], r["ci_high"], signed=True))
    stdout.print(table)
