"""Part ``plan``: the efficiency and per-call time a real GPU gives, against what the cost plan
assumes for it (``simclip_bench/plan/devices.py``).

APGD-CE runs on random-init zero-shot heads (8 classes; every image kept attacked by a tiny eps, so every
iteration runs) through a classifier that counts its calls and images: ViT-B-32 and ViT-L-14 at 224 px in bf16
autocast (the search precision on CUDA) and ViT-L-14 in float32, then tiny-clip with 1 image (call-bound). For each:
seconds, counted FLOPs (gradient and forward images x the plan's per-image FLOPs from ``model_cost``), achieved
TFLOP/s, efficiency (achieved / the plan device's peak), seconds per batched call, the plan's predicted seconds for
the same work and the ratio measured / predicted. ``--dry-run`` runs it on the CPU at toy size against the ``cpu``
plan device.
"""
from __future__ import annotations

import time

import torch

from gpu_parts.common import Recorder, free, guarded, log
from gpu_parts.markdown import pct, table

SIZES = {"cuda": {"rows": [["ViT-B-32", 64, "bf16", 5], ["ViT-L-14", 32, "bf16", 5], ["ViT-L-14", 16, "fp32", 3]],
                  "call_iterations": 50},
         "dry-run": {"rows": [["ViT-B-32", 2, "fp32", 1]], "call_iterations": 5}}


def _plan_device(device: torch.device):
    from simclip_bench.plan.devices import get_plan_device

    if device.type != "cuda":
        return get_plan_device("cpu")
    name = torch.cuda.get_device_name(device).lower()
    return get_plan_device(next((k for k in ("h200", "a100", "h100") if k in name), "h100"))


def _row(arch: str, batch: int, precision: str, n_iter: int, device: torch.device, plan_device) -> dict:
    from plan_vs_measured import CountingHead  # benchmarks/ is on sys.path (gpu_check.py puts it there)

    from simclip_bench.attacks.ensemble import run_ensemble
    from simclip_bench.attacks.registry import resolve_attack
    from simclip_bench.devices import autocast_for
    from simclip_bench.models.spec import load_model
    from simclip_bench.plan.model_cost import count_model_cost
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    loaded = load_model(arch if arch == "tiny-clip" else f"random:{arch}", device)
    classes = [f"class {i}" for i in range(8)]
    head = CountingHead(ZeroShotClassifier(loaded.model.encoder, build_text_classifier(
        loaded.model, classes, ["a photo of a {}."])).eval())
    px = loaded.model.image_size
    x = torch.rand(batch, 3, px, px, device=device, generator=torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        labels = head.head(x).argmax(-1)
    spec = resolve_attack("apgd-ce").with_iterations(n_iter)

    def attack():
        run_ensemble(spec, head, x, labels, 1e-6, batch_size=batch,
                     autocast=lambda: autocast_for(precision, device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    attack()  # warm-up: kernel selection, cuBLAS handles
    head.calls = head.grad_images = head.forward_images = 0
    t0 = time.perf_counter()
    attack()
    seconds = time.perf_counter() - t0
    cost = count_model_cost(loaded.arch, n_classes=8)
    flops = head.grad_images * cost.grad_flops + head.forward_images * cost.forward_flops
    achieved = flops / seconds
    predicted = plan_device.seconds(head.grad_images * cost.grad_flops, head.calls, precision) + \
        plan_device.seconds(head.forward_images * cost.forward_flops, 0, "fp32")
    return {"model": arch, "image_size": px, "batch": batch, "precision": precision, "iterations": n_iter,
            "seconds": round(seconds, 4), "calls": head.calls, "grad_images": head.grad_images,
            "tflop": round(flops / 1e12, 4), "achieved_tflops": round(achieved / 1e12, 3),
            "efficiency": round(achieved / plan_device.peak_flops[precision], 4),
            "assumed_efficiency": plan_device.efficiency[precision],
            "seconds_per_call": round(seconds / head.calls, 5), "assumed_seconds_per_call": plan_device.call_seconds,
            "plan_seconds": round(predicted, 4), "measured_over_plan": round(seconds / predicted, 3)}


def run(rec: Recorder, s: dict) -> None:
    """Measure the cost plan's efficiency and per-call time on ``s['device']`` (see the module docstring)."""
    device = torch.device(s["device"])
    sizes = SIZES["dry-run" if s["mode"] == "dry-run" else "cuda"]
    plan_device = _plan_device(device)
    rec.put("plan_device", {"name": plan_device.name, "peak_flops": plan_device.peak_flops,
                            "assumed_efficiency": plan_device.efficiency,
                            "assumed_seconds_per_call": plan_device.call_seconds})
    for arch, batch, precision, n_iter in [*sizes["rows"], ["tiny-clip", 1, "fp32", sizes["call_iterations"]]]:
        log(f"plan: {arch} batch {batch} {precision}")
        row = guarded(rec, f"plan {arch} {precision}", _row, arch, batch, precision, n_iter, device, plan_device)
        rec.append("rows", row or {"model": arch, "precision": precision, "status": "failed",
                                   "error": rec.data["errors"][-1]})
        free(device)


def markdown(report: dict) -> list[str]:
    pl = report["parts"].get("plan", {}).get("results", {})
    if not pl.get("rows"):
        return []
    return ["", f"## Cost plan: efficiency and per-call time on {pl.get('plan_device', {}).get('name')}", ""] + table(
        ["model", "batch", "precision", "s", "TFLOP/s", "efficiency", "assumed", "s / call", "assumed s / call",
         "measured / plan"],
        [[r["model"], r.get("batch"), r["precision"], r.get("seconds"), r.get("achieved_tflops"),
          pct(r.get("efficiency")), pct(r.get("assumed_efficiency")), r.get("seconds_per_call"),
          r.get("assumed_seconds_per_call"), r.get("measured_over_plan") or r.get("error")]
         for r in pl["rows"]])
