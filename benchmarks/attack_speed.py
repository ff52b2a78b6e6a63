"""Speed and strength of three APGD-CE + APGD-T implementations on the same model and samples.

For each model and eps, on the same test images of the built-in shapes data, in one process:

* ``ours``: ``run_ensemble`` with ``apgd-ce+apgd-t`` (100 iterations each, 1 restart);
* ``reference``: pyautoattack (the reference AutoAttack code), version ``custom`` with ``apgd-ce`` and
  ``apgd-t``, same iterations and restarts (``run_reference`` with ``ref:apgd-ce+apgd-t``);
* ``torchattacks``: ``APGD(loss="ce")`` then ``APGDT`` on the images still robust (its ``MultiAttack``),
  100 steps, 1 restart, seed 0, rho 0.75.

APGD-T uses the 9 most likely other classes, at most C-1: the built-in data has 8 classes, so all
three run 7 targets. Every implementation attacks the same classifier through a counting wrapper that
records the images passed forward with autograd enabled (one gradient evaluation per image, as
asked), the images whose logits actually received a gradient (a cross-check), and the images passed
forward without autograd. Robust accuracy is recomputed afterwards, for all three the same way (float32
prediction at the returned images, outside the counters and the timer), and every returned image is
checked to lie in the eps-ball and in [0,1].

torchattacks is NOT a dependency of simclip-bench (it pins an old ``requests`` and declares torchvision):
this script installs it on demand, without its dependencies, into ``benchmarks/.deps`` (git-ignored) and
appends that folder to ``sys.path`` for this process only. It imports without ``requests``, torchvision and
tqdm (only the ``robustbench`` copy bundled in its wheel uses ``requests`` and torchvision, and nothing here
imports that); its ``__init__`` does need scipy (TIFGSM, OnePixel), which this environment already has
through clip_benchmark -> scikit-learn.

A spec ``random:ARCH`` (e.g. ``random:ViT-B-32``) is a randomly initialised open_clip model (no weights,
seed 0), wrapped like the loader wraps open_clip models; it runs on ``--random-n-samples`` images
rendered at its input size (224 px for ViT-B-32). Its clean accuracy is near chance, so it measures
the per-iteration overhead of each implementation on a real-size model, not attack strength.

    pip install -e ".[dev]"
    nice -n 5 python benchmarks/attack_speed.py --model tiny-clip --model runs/<a simclip train run> \\
        --model random:ViT-B-32 --n-samples 500 --random-n-samples 16 --eps 4/255 --threads 1
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.models.open_clip_build import wrap_open_clip
from simclip_bench.models.pixel_clip import PixelSpaceCLIP
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

TORCHATTACKS = "torchattacks==3.5.1"
DEFAULT_DEPS = Path(__file__).resolve().parent / ".deps"
N_ITER = 100
MAX_TARGETS = 9
SEED = 0
STRENGTH_TOLERANCE = 0.005  # ours may be at most 0.5 points above the reference


class CountingClassifier(nn.Module):
    """Passes images to ``inner`` and counts them: forwards with autograd enabled, images whose logits
    received a gradient (counted by a hook during the backward pass), and forwards without autograd."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.grad_forward = 0
        self.backprop = 0
        self.nograd_forward = 0

    def _count_backprop(self, grad: torch.Tensor) -> None:
        self.backprop += grad.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.inner(images)
        if torch.is_grad_enabled():
            self.grad_forward += images.shape[0]
        else:
            self.nograd_forward += images.shape[0]
        if logits.requires_grad:
            logits.register_hook(self._count_backprop)
        return logits


@dataclass
class Outcome:
    name: str
    robust: float
    seconds: float
    grad_forward: int
    backprop: int
    nograd_forward: int


def import_torchattacks(deps: Path):
    """torchattacks from ``deps``, installed there with ``pip --no-deps`` on first use."""
    if not (deps / "torchattacks").is_dir():
        print(f"installing {TORCHATTACKS} (no dependencies) into {deps}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(deps),
                        TORCHATTACKS], check=True)
    if str(deps) not in sys.path:
        sys.path.append(str(deps))  # appended: nothing in deps shadows the environment's packages
    try:
        module = importlib.import_module("torchattacks")
    except ImportError as e:  # its __init__ imports every attack; TIFGSM and OnePixel need scipy
        raise SystemExit(f"torchattacks does not import here ({e}); it needs scipy at import time, which "
                         "simclip-bench's environment has through clip_benchmark -> scikit-learn") from None
    if Path(module.__file__).resolve().parent.parent != deps.resolve():
        print(f"note: torchattacks imported from {module.__file__}, not from {deps}")
    return module


def load(spec: str) -> PixelSpaceCLIP:
    if spec.startswith("random:"):
        import open_clip

        arch = spec.split(":", 1)[1]
        torch.manual_seed(SEED)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip warns that the model has no pretrained weights: intended
        try:
            clip = open_clip.create_model(arch)
        finally:
            root.setLevel(level)
        return wrap_open_clip(clip, open_clip.get_tokenizer(arch))
    return load_model(spec, "cpu").model


def timed(name: str, counted: CountingClassifier, head: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
          attack, *args, **kwargs) -> Outcome:
    """Run ``attack(*args, **kwargs)`` (it returns adversarial images for ``x``) and measure it."""
    counted.reset()
    t0 = time.perf_counter()
    x_adv = attack(*args, **kwargs)
    seconds = time.perf_counter() - t0
    grad_forward, backprop, nograd_forward = counted.grad_forward, counted.backprop, counted.nograd_forward
    check_perturbation(x_adv, x, eps)
    robust = (predict(head, x_adv, 500) == y).float().mean().item()
    return Outcome(name, robust, seconds, grad_forward, backprop, nograd_forward)


def run_ours(spec, counted: CountingClassifier, x: torch.Tensor, y: torch.Tensor, eps: float,
             batch_size: int) -> torch.Tensor:
    return run_ensemble(spec, counted, x, y, eps, seed=SEED, batch_size=batch_size).x_adv


def run_torchattacks(ta, counted: CountingClassifier, x: torch.Tensor, y: torch.Tensor, eps: float,
                     n_classes: int, batch_size: int) -> torch.Tensor:
    ce = ta.APGD(counted, norm="Linf", eps=eps, steps=N_ITER, n_restarts=1, seed=SEED, loss="ce", rho=0.75)
    targeted = ta.APGDT(counted, norm="Linf", eps=eps, steps=N_ITER, n_restarts=1, seed=SEED, rho=0.75,
                        n_classes=n_classes)
    targeted.n_target_classes = min(MAX_TARGETS, n_classes - 1)  # its default is n_classes - 1
    both = ta.MultiAttack([ce, targeted])
    return torch.cat([both(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help="any spec load_model accepts, or random:ARCH (repeatable; default tiny-clip)")
    parser.add_argument("--n-samples", type=int, default=500, help="test images for loaded models")
    parser.add_argument("--random-n-samples", type=int, default=16, help="test images for random:ARCH models")
    parser.add_argument("--eps", action="append", default=None, help="repeatable; default 4/255")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 is faster on a loaded machine")
    parser.add_argument("--deps", type=Path, default=DEFAULT_DEPS, help="where torchattacks is installed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ta = import_torchattacks(args.deps)
    import pyautoattack

    ours_spec, ref_spec = resolve_attack("apgd-ce+apgd-t"), resolve_attack("ref:apgd-ce+apgd-t")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, pyautoattack "
          f"{getattr(pyautoattack, '__version__', '?')}, torchattacks {ta.__version__}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"APGD-CE then APGD-T, {N_ITER} iterations, 1 restart, seed {SEED}, l-inf; counts are images")
    rows: list[str] = []
    checks: list[str] = []
    for spec in args.model or ["tiny-clip"]:
        model = load(spec)
        n = args.random_n_samples if spec.startswith("random:") else args.n_samples
        data = ShapesDataset("test", size=n, image_size=model.image_size)
        head = ZeroShotClassifier(model.encoder,
                                  build_text_classifier(model, data.classnames, data.templates)).eval()
        counted = CountingClassifier(head).eval()
        x, y = data.tensors()
        clean = (predict(head, x, args.batch_size) == y).float().mean().item()
        n_classes = len(data.classnames)
        n_targets = min(MAX_TARGETS, n_classes - 1)
        name = spec if len(spec) <= 28 else "…" + spec[-27:]
        print(f"\n{name}: {n} images of {data.image_size} px, {n_classes} classes -> APGD-T with {n_targets} "
              f"targets in all three; clean accuracy {clean:.1%} ({int(round(clean * n))} of {n} attacked)")
        for text in args.eps or ["4/255"]:
            eps = parse_eps(text).value
            results = [
                timed("ours", counted, head, x, y, eps, run_ours, ours_spec, counted, x, y, eps, args.batch_size),
                timed("reference", counted, head, x, y, eps, run_reference, ref_spec, counted, x, y, eps,
                      seed=SEED, batch_size=args.batch_size),
                timed("torchattacks", counted, head, x, y, eps, run_torchattacks, ta, counted, x, y, eps, n_classes,
                      args.batch_size),
            ]
            ours = results[0]
            for r in results:
                line = (f"| {name} | {text} | {r.name} | {clean:.1%} | {r.robust:.1%} | {r.seconds:.1f} | "
                        f"{r.grad_forward} | {r.backprop} | {r.nograd_forward} | {ratio(r.seconds, ours.seconds)} | "
                        f"{ratio(r.grad_forward, ours.grad_forward)} |")
                rows.append(line)
                print(line, flush=True)
            ref, tat = results[1], results[2]
            verdict = "PASS" if ours.robust <= ref.robust + STRENGTH_TOLERANCE else "FAIL"
            checks.append(f"{name} {text}: ours {ours.robust:.1%} vs reference {ref.robust:.1%} -> {verdict} "
                          f"(torchattacks {tat.robust:.1%})")
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n| model | eps | implementation | clean | robust | s | grad fwd | backprop | no-grad fwd "
          "| time / ours | grad fwd / ours |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nstrength (ours <= reference + 0.5 points):")
    print("\n".join(checks))


if __name__ == "__main__":
    main()
