"""Side by side on the same model and samples: our ensemble against the reference code.

For each model and eps it runs, on the same test images:

* ours: ``--attack`` (default ``apgd-ce+apgd-t``: APGD-CE then APGD-T with 9 targets, 100 iterations each,
  1 restart; ``'apgd-ce*5+apgd-t'`` is RobustVLM's protocol, with 5 restarts of APGD-CE);
* ``ref:<attack>``: the same ensemble through pyautoattack;
* optionally standard ``autoattack`` through pyautoattack (``--autoattack``);

and prints robust accuracy, wall time and the time ratio. The claim it checks: ours is as strong
(robust accuracy <= reference + 0.5 points) and faster.

    pip install -e ".[dev]"
    python benchmarks/ensemble_vs_reference.py --model tiny-clip --model runs/<a simclip train run> \
        --n-samples 500 --eps 2/255 --eps 4/255 --autoattack
    python benchmarks/ensemble_vs_reference.py --attack 'apgd-ce*5+apgd-t' --model tiny-clip --n-samples 500
"""
from __future__ import annotations

import argparse
import time

import torch

from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--attack", default="apgd-ce+apgd-t", help="our ensemble; the reference runs ref:<attack>")
    parser.add_argument("--autoattack", action="store_true", help="also run standard AutoAttack (slow on CPU)")
    args = parser.parse_args()
    ours, ref = resolve_attack(args.attack), resolve_attack(f"ref:{args.attack}")
    print(f"torch threads {torch.get_num_threads()}, {args.n_samples} test images, batch {args.batch_size}, "
          f"{ours.name} vs {ref.name}")
    print(f"{'model':<28} {'eps':>6} {'clean':>6} {'ours':>6} {'ref':>6} {'AA':>6} "
          f"{'ours s':>7} {'ref s':>7} {'AA s':>7} {'ref/ours':>8}")
    for spec in args.model or ["tiny-clip"]:
        loaded = load_model(spec, "cpu")
        data = ShapesDataset("test", size=args.n_samples, image_size=loaded.model.image_size)
        head = ZeroShotClassifier(loaded.model.encoder,
                                  build_text_classifier(loaded.model, data.classnames, data.templates)).eval()
        x, y = data.tensors()
        clean = (predict(head, x, args.batch_size) == y).float().mean().item()
        for text in args.eps or ["2/255", "4/255"]:
            eps = parse_eps(text).value
            t0 = time.perf_counter()
            robust_ours = run_ensemble(ours, head, x, y, eps, batch_size=args.batch_size).robust.float().mean().item()
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            adv = run_reference(ref, head, x, y, eps, batch_size=args.batch_size)
            t_ref = time.perf_counter() - t0
            robust_ref = (predict(head, adv, args.batch_size) == y).float().mean().item()
            aa, t_aa = float("nan"), float("nan")
            if args.autoattack:
                t0 = time.perf_counter()
                adv = run_reference(resolve_attack("autoattack"), head, x, y, eps, batch_size=args.batch_size)
                t_aa = time.perf_counter() - t0
                aa = (predict(head, adv, args.batch_size) == y).float().mean().item()
            name = spec if len(spec) <= 28 else "…" + spec[-27:]
            print(f"{name:<28} {text:>6} {clean:>6.1%} {robust_ours:>6.1%} {robust_ref:>6.1%} {aa:>6.1%} "
                  f"{t_ours:>7.1f} {t_ref:>7.1f} {t_aa:>7.1f} {t_ref / t_ours:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
