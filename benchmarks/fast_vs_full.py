"""The fast protocol against the full ``apgd-ce+apgd-t``, in one run, on the same samples.

For each model and eps it runs ``simclip eval`` twice through the library, each into its own empty store
(so nothing is reused): ``--protocol fast`` (its audit included, as a user runs it) and the full protocol
(``--attack apgd-ce+apgd-t``, 100 iterations, 9 targets). It prints robust accuracy, gradient evaluations
per sample (from the rows' ``grad_evals``), wall time, the audit's misses and bound, and the true
overstatement, which the full run over every sample gives exactly. The claims it checks: fast robust
accuracy <= full + 0.5 points; >= 3x fewer gradient evaluations and >= 3x less wall time on the robust
models at 4/255.

``--fast-targets K`` (repeatable; ``rule``: the protocol's own count, which grows with the class count) runs
the fast protocol with K MALT-ranked targets,
each variant against the same full run; ``--dataset shape-colors`` is the 64-class task. After the table, per
variant, the audit pooled over its rows (:func:`~simclip_bench.results.audit.pooled_audit`, as one run of the
whole grid would report it) and the true misses over all rows. ``--out DIR`` keeps the stores (a store
already there is reused, with the wall time it recorded).

A last row gives the cost of one gradient evaluation per image on a random-init ViT-B-32 (224 px) zero-shot
head, for an APGD iteration and for MALT's target ranking: the evaluation counts above then convert to time
on a real model.

    pip install -e ".[dev]"
    python benchmarks/fast_vs_full.py --model tiny-clip --model runs/<simclip run> --model runs/<fare run> \\
        --n-samples 500 --eps 2/255 --eps 4/255
    python benchmarks/fast_vs_full.py --dataset shape-colors --model tiny-clip --fast-targets 2 --fast-targets rule
"""
from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.audit import pooled_audit
from simclip_bench.results.store import read_samples

SECONDS_FILE = "wall_seconds.txt"  # the wall time of the run that computed a kept store


def _run(spec: str, dataset: str, eps: str, n: int, out: Path, fast: bool,
         n_targets: int | None = None) -> tuple[pd.Series, float, pd.DataFrame]:
    request = EvalRequest(models=[spec], datasets=[dataset], protocol="fast" if fast else "default",
                          attack=None if fast else "apgd-ce+apgd-t", eps=[eps], n_samples=n,
                          n_iter=None if fast else 100, n_targets=n_targets if fast else None, out=out,
                          device="cpu", precision="fp32")
    t0 = time.perf_counter()
    result = run_eval(request)
    seconds = time.perf_counter() - t0
    if result.computed:
        (out / SECONDS_FILE).write_text(f"{seconds:.3f}\n")
    elif (out / SECONDS_FILE).exists():
        seconds = float((out / SECONDS_FILE).read_text())
    rows = pd.DataFrame(result.rows)
    return rows[rows["attack"] != "none"].iloc[0], seconds, rows


def _outcomes(out: Path, setting: str) -> pd.Series:
    samples = read_samples(out)
    part = samples[samples["setting"] == setting]
    return part.set_index(part["sample_id"].astype(str))["adv_correct"].astype(str).str.lower() == "true"


def _total_evals(out: Path, n: int) -> float:
    """Every gradient evaluation of the run (the audit's included), per evaluated sample."""
    samples = read_samples(out)
    return float(pd.to_numeric(samples["grad_evals"]).sum()) / n


def per_evaluation_cost(arch: str = "ViT-B-32", px: int = 224, batch: int = 8, n_iter: int = 3) -> dict[str, float]:
    """Milliseconds per image-gradient evaluation on a random-init ``arch`` zero-shot head (CPU, fp32): an
    APGD-CE iteration, and MALT's ranking (one forward, 7 backward passes for 8 classes)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_parts.random_models import random_model

    from simclip_bench.attacks.apgd import APGD
    from simclip_bench.attacks.base import ClassifierObjective
    from simclip_bench.attacks.target_ranking import malt_order
    from simclip_bench.data.shapes import ShapesDataset
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    model = random_model(arch, px, torch.device("cpu"))
    data = ShapesDataset("test", size=batch, image_size=px)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, data.classnames, data.templates)).eval()
    x, y = data.tensors()
    APGD(4 / 255, n_iter=1, batch_size=batch).run(ClassifierObjective(head, y), x, torch.arange(batch))  # warm-up
    t0 = time.perf_counter()
    APGD(4 / 255, n_iter=n_iter, batch_size=batch, stop_on_success=False).run(ClassifierObjective(head, y), x,
                                                                               torch.arange(batch))
    apgd_ms = 1000 * (time.perf_counter() - t0) / ((n_iter + 1) * batch)
    with torch.no_grad():
        logits = head(x)
    t0 = time.perf_counter()
    order = malt_order(head, x, y, logits)
    malt_ms = 1000 * (time.perf_counter() - t0) / (order.shape[1] * batch)
    return {"apgd_ms": apgd_ms, "malt_ms": malt_ms}


def _targets_label(targets: int | None, dataset: str) -> str:
    """``2`` for an explicit count, ``rule: 3`` for the protocol's own (which grows with the class count)."""
    if targets is not None:
        return str(targets)
    from simclip_bench.data.catalog import open_source
    from simclip_bench.tasks.protocols import fast_targets

    return f"rule: {fast_targets(len(open_source(dataset).classnames))}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--fast-targets", action="append", default=None,
                        help="MALT-ranked targets of the fast protocol, or 'rule' for the protocol's own count "
                             "(repeatable; default: rule)")
    parser.add_argument("--out", type=Path, default=None, help="keep the stores here (default: a temporary folder)")
    parser.add_argument("--skip-vit", action="store_true", help="leave out the ViT-B-32 per-evaluation row")
    args = parser.parse_args()
    variants = [None if t == "rule" else int(t) for t in args.fast_targets or ["rule"]]
    print(f"torch threads {torch.get_num_threads()}, {args.n_samples} samples of {args.dataset}; full = "
          "apgd-ce+apgd-t, fast = --protocol fast (audit included)")
    print("| model | eps | targets | clean | full | fast | fast - full | true misses | audit missed/n | bound | "
          "full evals | fast evals | evals ratio | full s | fast s | time ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fast_rows: dict[int | None, list[dict]] = {k: [] for k in variants}
    true_missed: dict[int | None, int] = dict.fromkeys(variants, 0)
    with contextlib.ExitStack() as stack:
        root = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for spec in args.model or ["tiny-clip"]:
            for eps in args.eps or ["2/255", "4/255"]:
                where = root / _slug(args.dataset) / _slug(spec) / _slug(eps)
                full_out = where / "full"
                full, full_s, full_rows = _run(spec, args.dataset, eps, args.n_samples, full_out, fast=False)
                clean = full_rows[full_rows["attack"] == "none"].iloc[0]["value"]
                robust_full = _outcomes(full_out, full["setting"])
                full_evals = _total_evals(full_out, full["n_samples"])
                for targets in variants:
                    fast_out = where / f"fast-t{targets or 'default'}"
                    fast, fast_s, _ = _run(spec, args.dataset, eps, args.n_samples, fast_out, fast=True,
                                           n_targets=targets)
                    robust_fast = _outcomes(fast_out, fast["setting"])
                    true_misses = int((robust_fast & ~robust_full.reindex(robust_fast.index)).sum())
                    fast_evals = _total_evals(fast_out, fast["n_samples"])
                    fast_rows[targets].append(fast.to_dict())
                    true_missed[targets] += true_misses
                    name = spec if len(spec) <= 24 else "…" + spec[-23:]
                    label = _targets_label(targets, args.dataset)
                    print(f"| {name} | {eps} | {label} | {100 * clean:.1f} | {100 * full['value']:.1f} "
                          f"| {100 * fast['value']:.1f} | {100 * (fast['value'] - full['value']):+.1f} | "
                          f"{true_misses} | {int(fast['audit_missed'])}/{int(fast['audit_n'])} | "
                          f"{100 * fast['audit_miss_upper']:.1f} | {full_evals:.0f} | {fast_evals:.0f} | "
                          f"{full_evals / fast_evals:.2f} | {full_s:.1f} | {fast_s:.1f} | {full_s / fast_s:.2f} |",
                          flush=True)
    print()
    for targets in variants:
        pooled = pooled_audit(fast_rows[targets])
        cells = len(fast_rows[targets])
        print(f"targets {_targets_label(targets, args.dataset)}: true misses {true_missed[targets]} in {cells} x "
              f"{args.n_samples} "
              f"(cell, image) pairs; audit {pooled.line() if pooled else 'none'}")
    if not args.skip_vit:
        cost = per_evaluation_cost()
        print(f"\nrandom-init ViT-B-32, 224 px, CPU fp32: {cost['apgd_ms']:.1f} ms per image-gradient evaluation in "
              f"an APGD iteration, {cost['malt_ms']:.1f} ms in MALT's ranking")


if __name__ == "__main__":
    main()
