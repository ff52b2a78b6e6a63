"""Side by side: our APGD-CE against the reference implementation (pyautoattack's APGDAttack).

Same model (the built-in tiny CLIP as a zero-shot classifier), same clean-correct test images, same
settings (l-inf, 100 iterations, 1 restart, CE loss). Prints robust accuracy of each, the number
of images each one fooled that the other did not, wall time, and the time ratio.

    pip install -e ".[dev]"
    python benchmarks/apgd_vs_reference.py --n-samples 500 --eps 4/255 --eps 2/255
"""
from __future__ import annotations

import argparse
import time

import torch

from simclip_bench.attacks.apgd import apgd_attack
from simclip_bench.attacks.base import ClassifierObjective, check_perturbation
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier


def main() -> None:
    from pyautoattack.autopgd_base import APGDAttack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-clip")
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)

    loaded = load_model(args.model, "cpu")
    data = ShapesDataset("test", size=args.n_samples, image_size=loaded.model.image_size)
    head = ZeroShotClassifier(loaded.model.encoder,
                              build_text_classifier(loaded.model, data.classnames, data.templates)).eval()
    x, y = data.tensors()
    with torch.no_grad():
        keep = head(x).argmax(-1) == y
    x, y = x[keep], y[keep]
    print(f"model {args.model}: {len(x)}/{args.n_samples} clean-correct test images attacked, "
          f"{args.iterations} iterations, torch threads {torch.get_num_threads()}")
    print(f"{'eps':>6} {'ours robust':>12} {'ref robust':>11} {'only ours':>10} {'only ref':>9} "
          f"{'ours s':>8} {'ref s':>8} {'ref/ours time':>14}")
    for text in args.eps or ["4/255", "2/255"]:
        eps = parse_eps(text).value
        ours_fooled, ref_fooled = [], []
        t_ours = t_ref = 0.0
        for start in range(0, len(x), args.batch_size):
            xb, yb = x[start:start + args.batch_size], y[start:start + args.batch_size]
            t0 = time.perf_counter()
            adv = apgd_attack(ClassifierObjective(head, yb), xb, eps, n_iter=args.iterations,
                              batch_size=args.batch_size, seed=start).x_adv
            t_ours += time.perf_counter() - t0
            check_perturbation(adv, xb, eps)
            ref = APGDAttack(head, n_iter=args.iterations, norm="Linf", n_restarts=1, eps=eps, seed=start,
                             loss="ce", rho=0.75, device="cpu")
            t0 = time.perf_counter()
            ref_adv = ref.perturb(xb, yb)
            t_ref += time.perf_counter() - t0
            with torch.no_grad():
                ours_fooled.append(head(adv).argmax(-1) != yb)
                ref_fooled.append(head(ref_adv).argmax(-1) != yb)
        of, rf = torch.cat(ours_fooled), torch.cat(ref_fooled)
        n = len(of)
        print(f"{text:>6} {1 - of.float().mean():>12.1%} {1 - rf.float().mean():>11.1%} "
              f"{int((of & ~rf).sum()):>10} {int((rf & ~of).sum()):>9} {t_ours:>8.1f} {t_ref:>8.1f} "
              f"{t_ref / t_ours:>14.2f}")
        assert n == len(x)


if __name__ == "__main__":
    main()
