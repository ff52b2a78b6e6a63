"""Why the attack search offers bf16 but not fp16: fp16 autocast underflows the input gradient.

On the same images, for a float32, a bf16-autocast and an fp16-autocast search (fp16 only here, through
``torch.autocast`` directly: ``--precision`` does not offer it), it prints the fraction of input-gradient
entries that are exactly zero at the clean images, their median magnitude, and the robust accuracy left by
APGD-CE (every success confirmed in float32, so a weaker search can only leave more images robust).

    pip install -e ".[dev]"
    OMP_NUM_THREADS=1 python benchmarks/fp16_underflow.py --model tiny-clip --n-samples 200 --eps 4/255
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from simclip_bench.attacks.base import ClassifierObjective, loss_and_grad
from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(dtype):
    return contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-clip")
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--eps", default="4/255")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    loaded = load_model(args.model, "cpu")
    data = ShapesDataset("test", size=args.n_samples, image_size=loaded.model.image_size)
    head = ZeroShotClassifier(loaded.model.encoder,
                              build_text_classifier(loaded.model, data.classnames, data.templates)).eval()
    x, y = data.tensors()
    spec = resolve_attack("apgd-ce").with_iterations(args.iterations)
    eps = parse_eps(args.eps).value
    print(f"{args.model}, {args.n_samples} test images, APGD-CE {args.iterations} iterations, eps {args.eps}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'search':<6} {'zero grad':>10} {'median |g|':>11} {'robust':>7}")
    for name, dtype in DTYPES.items():
        with _autocast(dtype):
            _, _, grad = loss_and_grad(ClassifierObjective(head, y), x, torch.arange(len(x)))
        out = run_ensemble(spec, head, x, y, eps, autocast=lambda dtype=dtype: _autocast(dtype))
        print(f"{name:<6} {(grad == 0).float().mean().item():>10.1%} {grad.abs().median().item():>11.2e} "
              f"{out.robust.float().mean().item():>7.1%}", flush=True)


if __name__ == "__main__":
    main()
