"""Part ``training``: one Sim-CLIP-anchored step (``TrainSession.step``) with PGD, on random-init ViT-B-32 and
ViT-L-14 at 224 px: fp32, bf16 autocast, bf16 + gradient checkpointing; images/s, peak memory, counted FLOPs and
MFU, the SDPA kernel in use. The ``compile`` part (:mod:`gpu_parts.compiled`) runs the torch.compile rows through
the same code, in a process of its own.
"""
from __future__ import annotations

import contextlib
import functools
import time
from unittest import mock

import torch

from gpu_parts.common import Recorder, free, guarded, log, sync
from gpu_parts.markdown import num, pct, table
from gpu_parts.random_models import random_init_specs

# Dense (no sparsity) peak TFLOP/s of the NVIDIA H100 SXM datasheet (nvidia.com/en-us/data-center/h100: BF16 1,979
# and TF32 989 with sparsity, FP32 67); the H200 (nvidia.com/en-us/data-center/h200) has the same compute. fp32 is
# the plain (non-tensor-core) rate: PyTorch's default float32 matmul precision "highest" does not use TF32.
PEAK_TFLOPS = {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}
FLOP_COUNTING = ("counted with torch.utils.flop_counter's formulas (a dispatch mode, as its FlopCounterMode) over "
                 "one eager optimizer step: matmuls, convolutions and SDPA kernels as executed (the frozen "
                 "original's forward, the PGD forward + input-gradient passes, the outer forward and backward); "
                 "AdamW's elementwise work and the forward that gradient checkpointing recomputes are not counted, "
                 "as MFU conventions do; MFU = counted FLOPs per step / step time / datasheet dense peak of the "
                 "variant's precision (bf16 989.4 TFLOP/s; fp32 66.9 without TF32, PyTorch's default); "
                 "mfu_vs_measured_bf16_matmul: the same step against this run's own bf16 matmul rate")
VARIANTS: dict[str, dict] = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "bf16+grad-ckpt": {"precision": "bf16", "grad_checkpointing": True},
    "bf16+compile": {"precision": "bf16", "compile": True},
}
MATMUL_SIDE = 8192  # the square bf16 matmul whose rate is the practical ceiling (CUDA only)


@functools.lru_cache(maxsize=2)
def bf16_matmul_tflops(device: torch.device) -> float | None:
    """TFLOP/s of an 8192 x 8192 x 8192 bf16 matmul on ``device``, measured here (10 after 3 warm-ups): the rate a
    step could reach at best on this GPU and software. None on a CPU (the dry run)."""
    if device.type != "cuda":
        return None
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=torch.bfloat16)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return round(10 * 2 * MATMUL_SIDE**3 / (time.perf_counter() - t0) / 1e12, 1)


def count_flops(fn) -> int:
    """FLOPs of the matmuls, convolutions and attention kernels that ``fn()`` runs, by the formulas of
    ``torch.utils.flop_counter`` (its ``FlopCounterMode`` tracks modules with backward hooks, which autograd
    refuses inside ``torch.autograd.grad``, i.e. inside PGD; this mode counts the same ops without them)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        fn()
    return Counter.total


def attention_kernels(fn) -> str:
    """The SDPA kernels (aten op names) that ``fn()`` runs, from the profiler; 'none' when it uses no SDPA."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = sorted({e.name.replace("aten::", "") for e in prof.events()
                    if "scaled_dot_product" in e.name and not e.name.endswith("scaled_dot_product_attention")})
    return ", ".join(names) or "none (no SDPA kernel)"



def _peak_for(precision: str, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if not any(chip in name for chip in ("H100", "H200")):
        return None
    if precision == "bf16":
        return PEAK_TFLOPS["bf16"]
    return PEAK_TFLOPS["fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"]


ROW_NUMBERS = ("build_s", "warmup_s", "step_s", "images_per_s", "peak_mem_gib", "flops_per_step", "fwd_flops_per_image",
               "tflop_per_step", "fwd_gflop_per_image", "fwd_equivalents_per_image", "achieved_tflops", "peak_tflops",
               "mfu", "mfu_vs_measured_bf16_matmul", "attention", "attention_module")


def _blank_row(arch: str, px: int, batch: int, variant: str) -> dict:
    return {"model": arch, "image_size": px, "batch": batch, "variant": variant,
            "precision": VARIANTS[variant]["precision"], "status": "failed", "error": None,
            **dict.fromkeys(ROW_NUMBERS)}


def _train_row(arch: str, px: int, batch: int, variant: str, t: dict, device: torch.device, flops: dict) -> dict:
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.session import TrainSession

    opts = VARIANTS[variant]
    warmup = t["warmup"] + (t["compile_extra_warmup"] if opts.get("compile") else 0)
    cfg = TrainConfig(model=f"random:{arch}@{px}", objective="simclip-anchored", steps=1000, batch_size=batch,
                      lr=1e-5, warmup_steps=0, train_size=batch, probe_size=0, attack_steps=t["attack_steps"],
                      device=str(device), out=None, **opts)
    row = _blank_row(arch, px, batch, variant)
    row["attack_steps"] = t["attack_steps"]
    t0 = time.perf_counter()
    session = TrainSession(cfg, log=lambda *_: None)
    row["build_s"] = round(time.perf_counter() - t0, 2)
    row["attention_module"] = type(session.model.clip.visual.transformer.resblocks[0].attn).__name__
    one = torch.rand(1, 3, px, px, device=device)
    if not opts.get("compile"):
        def fwd_bwd():
            with session.autocast():
                session.encoder(one.clone().requires_grad_(True)).float().sum().backward()
            sync(device)
        row["attention"] = attention_kernels(fwd_bwd)
        session.opt.zero_grad(set_to_none=True)
    else:
        row["attention"] = ("compiled (inductor)" if device.type == "cuda"
                            else "compiled (dynamo, eager backend: dry run)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        session.step()
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 2)
    key = (arch, px, batch)
    count_now = t["count_flops_in_timed_step"] and key not in flops and not opts.get("compile")
    t0 = time.perf_counter()
    for i in range(t["timed"]):
        if count_now and i == 0:  # dry run: the counter's overhead is negligible next to a CPU step
            flops[key] = (count_flops(session.step), None)
        else:
            session.step()
    sync(device)
    step_s = (time.perf_counter() - t0) / t["timed"]
    row.update(step_s=round(step_s, 4), images_per_s=round(batch / step_s, 2),
               peak_mem_gib=(round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
                             else None))
    if (key not in flops or flops[key][1] is None) and not opts.get("compile"):
        step_flops = flops[key][0] if key in flops else count_flops(session.step)
        with torch.no_grad():
            flops[key] = (step_flops, count_flops(lambda: session.encoder(one)))
    if key in flops:
        step_flops, fwd_flops = flops[key]
        achieved = step_flops / step_s / 1e12
        peak = _peak_for(opts["precision"], device)
        matmul = bf16_matmul_tflops(device) if opts["precision"] == "bf16" else None
        row.update(flops_per_step=step_flops, fwd_flops_per_image=fwd_flops,
                   tflop_per_step=round(step_flops / 1e12, 3), fwd_gflop_per_image=round(fwd_flops / 1e9, 2),
                   fwd_equivalents_per_image=round(step_flops / (batch * fwd_flops), 2),
                   achieved_tflops=round(achieved, 2), peak_tflops=peak,
                   mfu=round(achieved / peak, 4) if peak else None,
                   mfu_vs_measured_bf16_matmul=round(achieved / matmul, 4) if matmul else None)
    row["status"] = "ok"
    return row


def train_rows(rec: Recorder, s: dict, t: dict, flops: dict) -> None:
    device = torch.device(s["device"])
    rec.put("flop_counting", FLOP_COUNTING + ("; on a CPU the SDPA kernel (flash attention for CPU) has no formula, "
                                              "so attention is left out" if device.type == "cpu" else ""))
    rec.put("peak_tflops", PEAK_TFLOPS)
    rec.put("bf16_matmul_tflops", bf16_matmul_tflops(device))
    rec.put("objective", f"simclip-anchored, PGD-{t['attack_steps']} (momentum 0.9, 1/255 steps, eps 4/255)")
    compile_patch = contextlib.nullcontext()
    if device.type == "cpu":  # inductor's C++ code generation takes minutes on a small CPU; dynamo still traces
        compile_patch = mock.patch.object(torch, "compile", functools.partial(torch.compile, backend="eager"))
    with random_init_specs(), compile_patch:
        for arch, px, batch, variant in t["rows"]:
            log(f"training {arch} {px}px batch {batch} {variant}")
            row = guarded(rec, f"training {arch} {variant}", _train_row, arch, px, batch, variant, t, device, flops)
            if row is None:
                row = {**_blank_row(arch, px, batch, variant), "error": rec.data["errors"][-1]}
            rec.append("rows", row)
            if VARIANTS[variant].get("compile"):
                torch._dynamo.reset()
            free(device)


def run(rec: Recorder, s: dict) -> None:
    """The eager variants; their counted FLOPs serve the compile part too (same model, batch and step)."""
    train_rows(rec, s, s["sizes"]["training"], {})


def train_rows_of(report: dict) -> list[dict]:
    """The rows of the training and the compile parts together."""
    return [r for name in ("training", "compile")
            for r in report["parts"].get(name, {}).get("results", {}).get("rows", [])]


def markdown(report: dict) -> list[str]:
    """The training table (the compile part's rows too)."""
    parts = report["parts"]
    tr = parts.get("training", {}).get("results", {}) or parts.get("compile", {}).get("results", {})
    rows = train_rows_of(report)
    if not rows:
        return []
    matmul = tr.get("bf16_matmul_tflops")
    lines = ["", f"## Training: one step of {tr.get('objective')}", "", f"FLOPs: {tr.get('flop_counting')}."]
    if matmul:
        lines.append(f"bf16 matmul ({MATMUL_SIDE}³) measured here: {matmul} TFLOP/s.")
    lines.append("")
    return lines + table(["model", "px", "batch", "variant", "status", "images/s", "peak GiB", "TFLOP/step",
                          "TFLOP/s", "MFU", "fwd-equiv./image", "attention"],
                         [[r["model"], r.get("image_size"), r["batch"], r["variant"], r["status"],
                           num(r.get("images_per_s"), 2), num(r.get("peak_mem_gib"), 2),
                           num(r.get("tflop_per_step"), 3), num(r.get("achieved_tflops"), 2), pct(r.get("mfu")),
                           r.get("fwd_equivalents_per_image"), r.get("attention") or r.get("error")] for r in rows])
