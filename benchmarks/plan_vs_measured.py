"""The cost plan against measured CPU runs: the CPU's calibration, then three runs of different sizes.

``--calibrate`` measures the constants of the ``cpu`` plan device (``simclip_bench/plan/devices.py``):

* peak: float32 FLOP/s of a 2048^3 matmul;
* efficiency and time per batched call, solved from two APGD-CE runs with what they really did (FLOPs from the
  counted gradient evaluations and forward images, calls counted at the classifier; eps 1e-6, so that no image
  is fooled and every iteration runs): one compute-bound (8 images through a random-init ViT-B-32 at 224 px, 3
  iterations) and one call-bound (4 tiny-clip images, 100 iterations);
* setup: the wall time of ``simclip eval --attack none --n-samples 8`` (start, imports, model, text classifier);
* rendering a built-in shapes image (host CPU, once per process and split): ``base + per_pixel * px^2``, from 32
  and 224 px (``simclip_bench/plan/datasets.py``).

``--check`` (after the constants are in devices.py) runs three commands end to end as subprocesses and compares
each with its ``--dry-run --plan-device cpu`` plan: the plan's gradient evaluations must bound the measured ones
(samples.csv's ``grad_evals``; training: steps x batch x passes, exact), and its time is set beside the wall time,
both the worst case's and the plan's time model at the measured count (its batched calls unchanged).

    cpuslot --exclusive python benchmarks/plan_vs_measured.py --calibrate --check   # both, the check with
                                                                       # the constants just measured
    cpuslot --exclusive python benchmarks/plan_vs_measured.py --check  # with devices.py's constants
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "tiny-clip apgd-ce, 200 images": ["eval", "--attack", "apgd-ce", "--n-samples", "200"],
    "tiny-clip apgd-ce+apgd-t, 200 images": ["eval", "--attack", "apgd-ce+apgd-t", "--n-samples", "200"],
    "tiny-clip train, 50 steps": ["train", "--steps", "50", "--probe-size", "200"],
}


class CountingHead(nn.Module):
    """A classifier that counts its batched calls and the images of its gradient and forward-only passes."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head, self.calls, self.grad_images, self.forward_images = head, 0, 0, 0

    def forward(self, x):
        self.calls += 1
        if x.requires_grad and torch.is_grad_enabled():
            self.grad_images += len(x)
        else:
            self.forward_images += len(x)
        return self.head(x)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _apgd_run(spec: str, n: int, n_iter: int, eps: float) -> dict:
    from simclip_bench.attacks.ensemble import run_ensemble
    from simclip_bench.attacks.registry import resolve_attack
    from simclip_bench.models.spec import load_model
    from simclip_bench.plan.model_cost import count_model_cost
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    loaded = load_model(spec)
    classes = [f"class {i}" for i in range(8)]
    head = CountingHead(ZeroShotClassifier(loaded.model.encoder, build_text_classifier(loaded.model, classes,
                                                                                        ["a photo of a {}."])).eval())
    x = torch.rand(n, 3, loaded.model.image_size, loaded.model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = head.head(x).argmax(-1)
    cost = count_model_cost(loaded.arch, n_classes=8)
    t0 = time.perf_counter()
    run_ensemble(resolve_attack("apgd-ce").with_iterations(n_iter), head, x, labels, eps, batch_size=500)
    seconds = time.perf_counter() - t0
    flops = head.grad_images * cost.grad_flops + head.forward_images * cost.forward_flops
    return {"spec": spec, "seconds": seconds, "flops": flops, "calls": head.calls, "grad_images": head.grad_images}


def _cli(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simclip_bench", *args], cwd=cwd, check=True, capture_output=True,
                   env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def shapes_render() -> tuple[float, float]:
    """(base seconds, seconds per pixel) of rendering one built-in shapes image: ``base + per_pixel * px^2``."""
    from simclip_bench.data.shapes import generate_sample

    times = {}
    for px, n in ((32, 400), (224, 60)):
        t0 = time.perf_counter()
        for i in range(n):
            generate_sample(0, "train", i, px)
        times[px] = (time.perf_counter() - t0) / n
    per_pixel = (times[224] - times[32]) / (224**2 - 32**2)
    return times[32] - per_pixel * 32**2, per_pixel


def calibrate() -> dict:
    peak = matmul_peak()
    render_base, render_per_pixel = shapes_render()
    # eps 1e-6: no image is fooled, every iteration of every image runs
    vit = _apgd_run("random:ViT-B-32", 8, 3, 1e-6)
    tiny = _apgd_run("tiny-clip", 4, 100, 1e-6)
    # seconds = flops / (peak * efficiency) + calls * call_seconds, for both runs
    a = torch.tensor([[vit["flops"] / peak, vit["calls"]], [tiny["flops"] / peak, tiny["calls"]]], dtype=torch.float64)
    inverse_efficiency, call_seconds = torch.linalg.solve(a, torch.tensor([vit["seconds"], tiny["seconds"]],
                                                                          dtype=torch.float64)).tolist()
    with tempfile.TemporaryDirectory() as work:
        setup = _cli(["eval", "--attack", "none", "--n-samples", "8", "--out", "res"], Path(work))
    return {"threads": torch.get_num_threads(), "peak_fp32_flops": peak, "efficiency_fp32": 1 / inverse_efficiency,
            "call_seconds": call_seconds, "setup_seconds": setup, "shapes_render_base_seconds": render_base,
            "shapes_render_seconds_per_pixel": render_per_pixel, "runs": [vit, tiny]}


def calibrated_device(calibration: dict):
    """The ``cpu`` plan device with ``calibration``'s constants (what devices.py then holds)."""
    from dataclasses import replace

    from simclip_bench.plan.devices import PLAN_DEVICES

    cpu = PLAN_DEVICES["cpu"]
    eff = calibration["efficiency_fp32"]
    return replace(cpu, peak_flops={"fp32": calibration["peak_fp32_flops"], "bf16": calibration["peak_fp32_flops"]},
                   efficiency={"fp32": eff, "bf16": eff / 4}, call_seconds=calibration["call_seconds"],
                   setup_seconds=calibration["setup_seconds"])


def check() -> list[dict]:
    from simclip_bench.jobs.plan import plan_eval_request, plan_train_config
    from simclip_bench.jobs.zeroshot_eval import EvalRequest
    from simclip_bench.train.config import TrainConfig

    rows = []
    for name, args in CASES.items():
        with tempfile.TemporaryDirectory() as work:
            if args[0] == "eval":
                request = EvalRequest(models=["tiny-clip"], attack=args[2], n_samples=int(args[4]), device="cpu")
                plan = plan_eval_request(request, "cpu")
                seconds = _cli([*args, "--out", "res", "--device", "cpu"], Path(work))
                measured = float(pd.read_csv(Path(work) / "res" / "samples.csv")["grad_evals"].sum())
            else:
                cfg = TrainConfig(steps=int(args[2]), probe_size=int(args[4]), device="cpu")
                cfg.validate()
                plan = plan_train_config(cfg, "cpu")
                seconds = _cli([*args, "--out", "run", "--device", "cpu"], Path(work))
                measured = cfg.steps * cfg.batch_size * (cfg.attack_steps + 1)  # no early stop: exact
            at_count = plan.setup_seconds + sum(r.seconds_at(measured) for r in plan.rows)
            rows.append({"case": name, "command": "simclip " + " ".join(args), "plan_grad_evals": plan.grad_evals,
                         "measured_grad_evals": measured, "plan_seconds": plan.seconds,
                         "plan_seconds_at_measured_count": at_count, "measured_seconds": seconds,
                         "measured_over_plan": seconds / plan.seconds,
                         "measured_over_plan_at_count": seconds / at_count})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    out = {}
    if args.calibrate:
        out["calibration"] = calibrate()
        print(json.dumps(out, indent=1), flush=True)
    if args.check:
        if args.calibrate:  # check the plan with the constants just measured (devices.py then gets them)
            from simclip_bench.plan import datasets, devices

            devices.PLAN_DEVICES["cpu"] = calibrated_device(out["calibration"])
            datasets.SHAPES_RENDER_BASE_SECONDS = out["calibration"]["shapes_render_base_seconds"]
            datasets.SHAPES_RENDER_SECONDS_PER_PIXEL = out["calibration"]["shapes_render_seconds_per_pixel"]
        out["check"] = check()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
