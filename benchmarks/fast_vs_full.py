"""The fast protocol against the full ``apgd-ce+apgd-t``, in one run, on the same samples.

For each model and eps it runs ``simclip eval`` twice through the library, each into its own empty store
(so nothing is reused): ``--protocol fast`` (its audit included, as a user runs it) and the full protocol
(``--attack apgd-ce+apgd-t``, 100 iterations, 9 targets). It prints robust accuracy, gradient evaluations
per sample (from the rows' ``grad_evals``), wall time, the audit's misses and bound, and the true
overstatement, which the full run over every sample gives exactly. The claims it checks: fast robust
accuracy <= full + 0.5 points; >= 3x fewer gradient evaluations and >= 3x less wall time on the robust
models at 4/255.

A last row gives the cost of one gradient evaluation per image on a random-init ViT-B-32 (224 px) zero-shot
head, for an APGD iteration and for MALT's target ranking: the evaluation counts above then convert to time
on a real model.

    pip install -e ".[dev]"
    python benchmarks/fast_vs_full.py --model tiny-clip --model runs/<simclip run> --model runs/<fare run> \\
        --n-samples 500 --eps 2/255 --eps 4/255
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_samples


def _run(spec: str, eps: str, n: int, out: Path, fast: bool) -> tuple[pd.Series, float, pd.DataFrame]:
    request = EvalRequest(models=[spec], protocol="fast" if fast else "default",
                          attack=None if fast else "apgd-ce+apgd-t", eps=[eps], n_samples=n,
                          n_iter=None if fast else 100, out=out, device="cpu", precision="fp32")
    t0 = time.perf_counter()
    result = run_eval(request)
    seconds = time.perf_counter() - t0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--skip-vit", action="store_true", help="leave out the ViT-B-32 per-evaluation row")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, {args.n_samples} samples of shapes; full = apgd-ce+apgd-t, "
          "fast = --protocol fast (audit included)")
    print("| model | eps | clean | full | fast | fast - full | true misses | audit missed/n | bound | "
          "full evals | fast evals | evals ratio | full s | fast s | time ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in args.model or ["tiny-clip"]:
        for eps in args.eps or ["2/255", "4/255"]:
            with tempfile.TemporaryDirectory() as tmp:
                full_out, fast_out = Path(tmp) / "full", Path(tmp) / "fast"
                full, full_s, full_rows = _run(spec, eps, args.n_samples, full_out, fast=False)
                fast, fast_s, _ = _run(spec, eps, args.n_samples, fast_out, fast=True)
                clean = full_rows[full_rows["attack"] == "none"].iloc[0]["value"]
                robust_fast, robust_full = _outcomes(fast_out, fast["setting"]), _outcomes(full_out, full["setting"])
                true_misses = int((robust_fast & ~robust_full.reindex(robust_fast.index)).sum())
                full_evals = _total_evals(full_out, full["n_samples"])
                fast_evals = _total_evals(fast_out, fast["n_samples"])
            name = spec if len(spec) <= 24 else "…" + spec[-23:]
            print(f"| {name} | {eps} | {100 * clean:.1f} | {100 * full['value']:.1f} | {100 * fast['value']:.1f} | "
                  f"{100 * (fast['value'] - full['value']):+.1f} | {true_misses} | "
                  f"{int(fast['audit_missed'])}/{int(fast['audit_n'])} | {100 * fast['audit_miss_upper']:.1f} | "
                  f"{full_evals:.0f} | {fast_evals:.0f} | {full_evals / fast_evals:.2f} | {full_s:.1f} | "
                  f"{fast_s:.1f} | {full_s / fast_s:.2f} |", flush=True)
    if not args.skip_vit:
        cost = per_evaluation_cost()
        print(f"\nrandom-init ViT-B-32, 224 px, CPU fp32: {cost['apgd_ms']:.1f} ms per image-gradient evaluation in "
              f"an APGD iteration, {cost['malt_ms']:.1f} ms in MALT's ranking")


if __name__ == "__main__":
    main()
