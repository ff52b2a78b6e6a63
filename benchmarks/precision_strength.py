"""Strength of a reduced-precision search, side by side on the same model and samples.

For each model and eps, on the same test images, ``apgd-ce+apgd-t`` (RobustVLM's zero-shot protocol) as:

* ``fp32``: ours, float32 search;
* ``bf16``: ours, bf16 autocast search (what CUDA runs by default), every success confirmed in float32
  before the sample leaves the search;
* ``bf16-old``: the same bf16 search with the search's own success flag taken at its word, as before the
  confirmation existed (emulated: the objective's ``confirm`` is removed); the ensemble's float32 check
  then counts such a sample robust. ``lost`` = samples the old stopping counted robust that the confirmed
  bf16 search fools;
* ``ref``: ``ref:apgd-ce+apgd-t`` through pyautoattack (float32).

It prints robust accuracy, wall time, how many bf16 flags the float32 confirmation rejected, and checks
that no sample counted fooled fails its float32 check. The claim it checks: bf16 robust accuracy <= fp32
+ 0.5 points and <= ref + 0.5 points. Runs on a CPU (bf16 autocast on the CPU); on CUDA pass --device cuda.

    pip install -e ".[dev]"
    OMP_NUM_THREADS=1 python benchmarks/precision_strength.py --model tiny-clip --model runs/<a simclip train run> \\
        --n-samples 500 --eps 2/255 --eps 4/255
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

import torch

from simclip_bench.attacks import ensemble
from simclip_bench.attacks.base import ClassifierObjective
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast_for, resolve_device
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier


class UnconfirmedObjective(ClassifierObjective):
    """The old behaviour: the search's (bf16) success flag ends the search; nothing confirms it."""

    confirm = None


def _ours(head, x, y, eps, batch_size, precision, device, old_stopping=False):
    spec = resolve_attack("apgd-ce+apgd-t")
    t0 = time.perf_counter()
    patch = mock.patch.object(ensemble, "ClassifierObjective", UnconfirmedObjective) if old_stopping else None
    if patch:
        patch.start()
    try:
        out = run_ensemble(spec, head, x, y, eps, batch_size=batch_size,
                           autocast=lambda: autocast_for(precision, device))
    finally:
        if patch:
            patch.stop()
    seconds = time.perf_counter() - t0
    fooled = ~out.robust & (predict(head, x, batch_size) == y)
    failing = int((predict(head, out.x_adv[fooled], batch_size) == y[fooled]).sum()) if fooled.any() else 0
    return out.robust, seconds, out.unconfirmed, failing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", action="append", default=None)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-reference", action="store_true", help="skip ref:apgd-ce+apgd-t")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch threads {torch.get_num_threads()}, device {device}, {args.n_samples} test images, "
          f"batch {args.batch_size}, apgd-ce+apgd-t")
    print(f"{'model':<28} {'eps':>6} {'clean':>6} {'fp32':>6} {'bf16':>6} {'bf16-old':>8} {'ref':>6} {'lost':>5} "
          f"{'rejected':>8} {'bad':>4} {'fp32 s':>7} {'bf16 s':>7} {'ref s':>7}")
    for spec in args.model or ["tiny-clip"]:
        loaded = load_model(spec, device)
        data = ShapesDataset("test", size=args.n_samples, image_size=loaded.model.image_size)
        head = ZeroShotClassifier(loaded.model.encoder,
                                  build_text_classifier(loaded.model, data.classnames, data.templates)).eval()
        x, y = (t.to(device) for t in data.tensors())
        clean = (predict(head, x, args.batch_size) == y).float().mean().item()
        for text in args.eps or ["2/255", "4/255"]:
            eps = parse_eps(text).value
            r32, t32, _, bad32 = _ours(head, x, y, eps, args.batch_size, "fp32", device)
            r16, t16, rejected, bad16 = _ours(head, x, y, eps, args.batch_size, "bf16", device)
            rold, _, _, _ = _ours(head, x, y, eps, args.batch_size, "bf16", device, old_stopping=True)
            lost = int((rold & ~r16).sum())
            ref, t_ref = float("nan"), float("nan")
            if not args.no_reference:
                t0 = time.perf_counter()
                adv = run_reference(resolve_attack("ref:apgd-ce+apgd-t"), head, x, y, eps, batch_size=args.batch_size)
                t_ref = time.perf_counter() - t0
                ref = (predict(head, adv, args.batch_size) == y).float().mean().item()
            name = spec if len(spec) <= 28 else "…" + spec[-27:]
            print(f"{name:<28} {text:>6} {clean:>6.1%} {r32.float().mean().item():>6.1%} "
                  f"{r16.float().mean().item():>6.1%} {rold.float().mean().item():>8.1%} {ref:>6.1%} {lost:>5} "
                  f"{rejected:>8} {bad32 + bad16:>4} {t32:>7.1f} {t16:>7.1f} {t_ref:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
