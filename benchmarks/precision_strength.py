"""Strength of a reduced-precision search, side by side on the same model and samples.

For each model, eps and attack, on the same test images:

* ``fp32``: ours, float32 search;
* ``bf16``: ours, bf16 autocast search (what CUDA runs by default): every iterate within bf16's rounding of
  the decision boundary is judged in exact float32, a sample leaves only on a float32 FOOLED verdict, and
  the verdict is decided once, on the point that is kept (``simclip_bench.attacks.base``);
* ``bf16-flag`` (for ``apgd-ce+apgd-t``; ``--flag-only-for`` names others): the same bf16 search flagging only
  iterates its own bf16 argmax calls fooled (the near-boundary check off: ``NEAR_BOUNDARY_ULPS = 0``).
  ``recovered`` = samples the bf16 search fools that this one leaves robust: the verdicts the near-boundary
  check recovered;
* ``ref`` (``--reference``): ``ref:apgd-ce+apgd-t`` through pyautoattack (float32).

Attacks: ``apgd-ce+apgd-t`` (RobustVLM's zero-shot protocol without restarts) and a user ensemble with
Square, ``apgd-ce+square`` (``--square-queries`` queries; AutoAttack's is 5 000). It also counts ``flips``:
kept points whose verdict changes when they are evaluated again in float32 in another batch composition
(reversed order, batches of 7; must be 0), ``borderline``: successes counted at a point fooled by less than
the float32 tolerance, and ``bad``: samples counted fooled whose float32 check fails (must be 0). The
claim it checks: bf16 robust accuracy <= fp32 + 0.5 points. Runs on a CPU (bf16 autocast on the CPU); on
CUDA pass --device cuda.

    pip install -e ".[dev]"
    OMP_NUM_THREADS=1 python benchmarks/precision_strength.py --model tiny-clip --model runs/<a simclip train run> \\
        --n-samples 500 --eps 2/255 --eps 4/255 --json precision.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from unittest import mock

import torch

from simclip_bench.attacks import base
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast_for, resolve_device
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier


def _spec(name: str, square_queries: int):
    spec = resolve_attack(name)
    return replace(spec, attacks=tuple(replace(a, n_iter=square_queries) if a.kind == "square" else a
                                       for a in spec.attacks))


def _run(head, x, y, eps, spec, batch_size, precision, device, near_check=True) -> dict:
    ulps = base.NEAR_BOUNDARY_ULPS if near_check else 0.0
    t0 = time.perf_counter()
    with mock.patch.object(base, "NEAR_BOUNDARY_ULPS", ulps):
        out = run_ensemble(spec, head, x, y, eps, batch_size=batch_size,
                           autocast=lambda: autocast_for(precision, device))
    seconds = time.perf_counter() - t0
    attacked = predict(head, x, batch_size) == y
    fooled = attacked & ~out.robust
    bad = int((predict(head, out.x_adv[fooled], batch_size) == y[fooled]).sum()) if fooled.any() else 0
    order = torch.arange(len(x) - 1, -1, -1)
    again = torch.empty_like(y)
    again[order] = predict(head, out.x_adv[order], 7)
    flips = int(((again != y) != fooled)[attacked].sum())
    return {"robust": out.robust.cpu(), "seconds": seconds, "bad": bad, "flips": flips, "borderline": out.borderline,
            "rejected": out.unconfirmed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--attack", action="append", default=None,
                        help="ensembles to run (default: apgd-ce+apgd-t and apgd-ce+square)")
    parser.add_argument("--square-queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", action="store_true", help="also ref:apgd-ce+apgd-t (pyautoattack)")
    parser.add_argument("--flag-only-for", action="append", default=None,
                        help="attacks that also run bf16-flag (default: apgd-ce+apgd-t)")
    parser.add_argument("--json", default=None, help="append one JSON line per case to this file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch threads {torch.get_num_threads()}, device {device}, {args.n_samples} test images, "
          f"batch {args.batch_size}, square {args.square_queries} queries")
    print(f"{'model':<24} {'eps':>6} {'attack':<16} {'clean':>6} {'fp32':>6} {'bf16':>6} {'bf16-flag':>9} {'ref':>6} "
          f"{'recovered':>9} {'borderline':>10} {'flips':>5} {'bad':>4} {'fp32 s':>7} {'bf16 s':>7}")
    for model in args.model or ["tiny-clip"]:
        loaded = load_model(model, device)
        data = ShapesDataset("test", size=args.n_samples, image_size=loaded.model.image_size)
        head = ZeroShotClassifier(loaded.model.encoder,
                                  build_text_classifier(loaded.model, data.classnames, data.templates)).eval()
        x, y = (t.to(device) for t in data.tensors())
        clean = (predict(head, x, args.batch_size) == y).float().mean().item()
        for text in args.eps or ["2/255", "4/255"]:
            eps = parse_eps(text).value
            for attack in args.attack or ["apgd-ce+apgd-t", "apgd-ce+square"]:
                spec = _spec(attack, args.square_queries)
                r32 = _run(head, x, y, eps, spec, args.batch_size, "fp32", device)
                r16 = _run(head, x, y, eps, spec, args.batch_size, "bf16", device)
                flagged = attack in (args.flag_only_for or ["apgd-ce+apgd-t"])
                rflag = (_run(head, x, y, eps, spec, args.batch_size, "bf16", device, near_check=False) if flagged
                         else {"robust": torch.full_like(r16["robust"], float("nan"), dtype=torch.float),
                               "flips": 0, "bad": 0})
                recovered = int((rflag["robust"].bool() & ~r16["robust"]).sum()) if flagged else -1
                ref = float("nan")
                if args.reference and attack == "apgd-ce+apgd-t":
                    adv = run_reference(resolve_attack("ref:apgd-ce+apgd-t"), head, x, y, eps,
                                        batch_size=args.batch_size)
                    ref = (predict(head, adv, args.batch_size) == y).float().mean().item()
                row = {"model": model, "eps": text, "attack": attack, "n": args.n_samples, "clean": clean,
                       "fp32": r32["robust"].float().mean().item(), "bf16": r16["robust"].float().mean().item(),
                       "bf16_flag_only": rflag["robust"].float().mean().item(), "ref": ref, "recovered": recovered,
                       "borderline": r32["borderline"] + r16["borderline"],
                       "flips": r32["flips"] + r16["flips"] + rflag["flips"],
                       "bad": r32["bad"] + r16["bad"] + rflag["bad"], "fp32_s": r32["seconds"],
                       "bf16_s": r16["seconds"], "threads": torch.get_num_threads()}
                name = model if len(model) <= 24 else "…" + model[-23:]
                print(f"{name:<24} {text:>6} {attack:<16} {clean:>6.1%} {row['fp32']:>6.1%} {row['bf16']:>6.1%} "
                      f"{row['bf16_flag_only']:>9.1%} {ref:>6.1%} {recovered:>9} {row['borderline']:>10} "
                      f"{row['flips']:>5} {row['bad']:>4} {row['fp32_s']:>7.1f} {row['bf16_s']:>7.1f}", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
