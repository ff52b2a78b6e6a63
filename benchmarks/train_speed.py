"""Training throughput, side by side: fp32 vs bf16 autocast, gradient accumulation, torch.compile,
gradient checkpointing; images/s of full Sim-CLIP steps (PGD inner loop + outer step) and ratios to fp32.

Not a test: timings depend on the machine. Usage::

    python benchmarks/train_speed.py                              # tiny-clip and random-init ViT-B-32
    python benchmarks/train_speed.py --model tiny-clip --steps 5 --variant fp32 --variant bf16

Random-init models are registered as ``ARCH:FILE`` specs from a temporary state dict (no download).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from simclip_bench.models.checkpoint import save_safetensors_atomic
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.session import TrainSession

VARIANTS: dict[str, dict] = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "accum2": {"precision": "fp32", "accum_steps": 2},
    "grad-ckpt": {"precision": "fp32", "grad_checkpointing": True},
    "compile": {"precision": "fp32", "compile": True},
}
MODELS = {"tiny-clip": 32, "ViT-B-32": 8}  # model -> global batch


def _spec(model: str, tmp: Path) -> str:
    if model == "tiny-clip":
        return model
    torch.manual_seed(0)
    clip = open_clip.create_model(model)
    path = tmp / f"{model}.safetensors"
    save_safetensors_atomic(clip.state_dict(), path, {})
    return f"{model}:{path}"


def images_per_s(spec: str, batch: int, variant: dict, steps: int, warmup: int, device: str) -> float:
    cfg = TrainConfig(model=spec, steps=1000, batch_size=batch, train_size=max(batch * (steps + warmup), 64),
                      probe_size=0, device=device, out=None, **variant)
    session = TrainSession(cfg, log=lambda *_: None)
    for _ in range(warmup):  # compile and allocator warm-up
        session.step()
    start = time.perf_counter()
    for _ in range(steps):
        session.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", choices=list(MODELS))
    ap.add_argument("--variant", action="append", choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.model or list(MODELS):
            spec, batch = _spec(model, Path(tmp)), MODELS[model]
            print(f"\n{model}, global batch {batch}, {args.steps} timed steps, device {args.device}")
            print(f"{'variant':<10} {'images/s':>9} {'vs fp32':>8}")
            base = None
            for name in args.variant or list(VARIANTS):
                try:
                    ips = images_per_s(spec, batch, VARIANTS[name], args.steps, args.warmup, args.device)
                except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a C++ toolchain
                    print(f"{name:<10} {'failed':>9}  ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
                    continue
                base = ips if name == "fp32" else base
                ratio = f"{ips / base:.2f}" if base else "-"
                print(f"{name:<10} {ips:9.1f} {ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
