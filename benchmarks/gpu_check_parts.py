"""The parts of ``benchmarks/gpu_check.py``; each runs in its own process (``gpu_check.py --child NAME``).

A part gets the run's settings (device, sizes, work folder) and a :class:`Recorder`, which writes the part's
results to a JSON file after every finished row, so that a part killed at its time limit still hands back
what it measured. A failing step is recorded (``errors``) and the part goes on with its next step.

Parts: ``env`` (versions, GPU, driver), ``training`` (one Sim-CLIP step on random-init ViT-B-32 / ViT-L-14:
fp32, bf16, gradient checkpointing, torch.compile; images/s, peak memory, counted FLOPs, MFU), ``attacks``
(ours vs the reference on tiny-clip, per-iteration cost on random-init ViT heads, bf16 vs fp32, host syncs),
``cli`` (``simclip train / eval / eval --task vqa`` as subprocesses), ``llava`` (a tiny random LLaVA with
tiny-clip swapped in: generation and the VLM attacks), ``ddp`` (torchrun, 1 rank: NCCL on CUDA, gloo on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import functools
import gc
import hashlib
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parent.parent
EPS = 4 / 255
# NVIDIA H100/H200 SXM datasheet, dense (no sparsity), TFLOP/s. fp32 is the plain (non-tensor-core) rate:
# PyTorch's default float32 matmul precision "highest" does not use TF32.
PEAK_TFLOPS = {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}
MEASURED_BF16_MATMUL_TFLOPS = 788  # /work/.library/device/KINDS.md: 8192^3 bf16 matmul on an nvidia-h200 here
FLOP_COUNTING = ("counted with torch.utils.flop_counter's formulas (a dispatch mode, as its FlopCounterMode) over "
                 "one eager optimizer step: matmuls, convolutions and SDPA kernels as executed (the frozen "
                 "original's forward, the PGD forward + input-gradient passes, the outer forward and backward); "
                 "AdamW's elementwise work and the forward that gradient checkpointing recomputes are not counted, "
                 "as MFU conventions do; MFU = counted FLOPs per step / step time / datasheet dense peak of the "
                 "variant's precision (bf16 989.4 TFLOP/s; fp32 66.9 without TF32, PyTorch's default)")
VARIANTS: dict[str, dict] = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "bf16+grad-ckpt": {"precision": "bf16", "grad_checkpointing": True},
    "bf16+compile": {"precision": "bf16", "compile": True},
}


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


class Recorder:
    """A part's results, saved to ``path`` (JSON) after every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict = {"results": {}, "errors": []}
        self.save()

    def put(self, key: str, value) -> None:
        self.data["results"][key] = value
        self.save()

    def append(self, key: str, row: dict) -> None:
        self.data["results"].setdefault(key, []).append(row)
        self.save()

    def fail(self, where: str, e: BaseException) -> str:
        line = f"{where}: {first_line(e)}"
        self.data["errors"].append(line)
        self.save()
        traceback.print_exc()
        print(f"[gpu_check] FAILED {line}", flush=True)
        return line

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def guarded(rec: Recorder, where: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an exception is recorded and None returned, so the part goes on."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a part records every failure and carries on
        rec.fail(where, e)
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ models


@functools.lru_cache(maxsize=4)
def _random_clip(arch: str, image_size: int):
    """A randomly initialised open_clip model (seed 0, no weights, nothing downloaded), kept on the CPU."""
    import open_clip

    torch.manual_seed(0)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights are loaded: intended
    try:
        return open_clip.create_model(arch, force_image_size=image_size)
    finally:
        root.setLevel(level)


def random_model(arch: str, image_size: int, device: torch.device):
    """A fresh copy of the random-init ``arch`` at ``image_size`` px, wrapped like the loader wraps open_clip."""
    import open_clip

    from simclip_bench.models.spec import wrap_open_clip

    return wrap_open_clip(copy.deepcopy(_random_clip(arch, image_size)), open_clip.get_tokenizer(arch)).to(device)


@contextlib.contextmanager
def random_init_specs():
    """Lets the training session load ``random:ARCH@PX`` (a random-init model) without a weights file."""
    from simclip_bench.models.spec import LoadedModel
    from simclip_bench.train import session

    real = session.load_model

    def load(spec, device="cpu", allow_unsafe_pickle=False):
        if not str(spec).startswith("random:"):
            return real(spec, device, allow_unsafe_pickle)
        arch, px = spec[len("random:"):].split("@")
        return LoadedModel(spec=spec, model_id=spec, arch=arch, model=random_model(arch, int(px), torch.device(device)),
                           checkpoint_hash="random-init")

    with mock.patch.object(session, "load_model", load):
        yield


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


# ------------------------------------------------------------------------------------------------ env


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        return None


def source_digest() -> str:
    """sha256 of the package and benchmark sources (the device machine's copy has no .git to name a commit)."""
    h = hashlib.sha256()
    files = sorted([*ROOT.glob("simclip_bench/**/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "pyproject.toml"])
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def part_env(rec: Recorder, s: dict) -> None:
    from simclip_bench.provenance import git_sha

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "open_clip": _version("open_clip_torch"), "transformers": _version("transformers"),
           "pyautoattack": _version("pyautoattack"), "numpy": _version("numpy"), "git_sha": git_sha(),
           "source_digest": source_digest(), "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cuda_available": torch.cuda.is_available(), "gpu_name": None, "gpu_count": 0, "gpu_memory_gib": None,
           "driver": None, "compute_capability": None,
           "sdp_backends_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                    "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                    "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                                    "math": torch.backends.cuda.math_sdp_enabled()}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}",
                   tf32_matmul_allowed=torch.backends.cuda.matmul.allow_tf32)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    rec.put("env", env)


# ------------------------------------------------------------------------------------------------ training


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
        row.update(flops_per_step=step_flops, fwd_flops_per_image=fwd_flops,
                   tflop_per_step=round(step_flops / 1e12, 3), fwd_gflop_per_image=round(fwd_flops / 1e9, 2),
                   fwd_equivalents_per_image=round(step_flops / (batch * fwd_flops), 2),
                   achieved_tflops=round(achieved, 2), peak_tflops=peak,
                   mfu=round(achieved / peak, 4) if peak else None,
                   mfu_vs_measured_bf16_matmul=(round(achieved / MEASURED_BF16_MATMUL_TFLOPS, 4)
                                                if peak and opts["precision"] == "bf16" else None))
    row["status"] = "ok"
    return row


def _train_rows(rec: Recorder, s: dict, t: dict, flops: dict) -> None:
    device = torch.device(s["device"])
    rec.put("flop_counting", FLOP_COUNTING + ("; on a CPU the SDPA kernel (flash attention for CPU) has no formula, "
                                              "so attention is left out" if device.type == "cpu" else ""))
    rec.put("peak_tflops", PEAK_TFLOPS)
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


def part_training(rec: Recorder, s: dict) -> None:
    """The eager variants; their counted FLOPs serve the compile part too (same model, batch and step)."""
    _train_rows(rec, s, s["sizes"]["training"], {})


def part_compile(rec: Recorder, s: dict) -> None:
    """The torch.compile variants, in a process of their own: compiling is the slowest and least certain step."""
    flops = {tuple(k.split("|")[:1]) + tuple(int(v) for v in k.split("|")[1:]): tuple(f)
             for k, f in s.get("known_flops", {}).items()}
    _train_rows(rec, s, s["sizes"]["compile"], flops)


# ------------------------------------------------------------------------------------------------ attacks


def _tiny_head(device: torch.device, n: int):
    from simclip_bench.data.shapes import ShapesDataset
    from simclip_bench.models.spec import load_model
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    model = load_model("tiny-clip", device).model
    data = ShapesDataset("test", size=n, image_size=model.image_size)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, data.classnames, data.templates)).eval()
    x, y = data.tensors()
    return head, x.to(device), y.to(device)


def _ensemble_rows(rec: Recorder, a: dict, device: torch.device) -> None:
    from attack_speed import CountingClassifier

    from simclip_bench.attacks.base import check_perturbation
    from simclip_bench.attacks.ensemble import predict, run_ensemble
    from simclip_bench.attacks.reference import run_reference
    from simclip_bench.attacks.registry import resolve_attack
    from simclip_bench.devices import autocast_for

    n, bs = a["n_samples"], a["batch_size"]
    head, x, y = _tiny_head(device, n)
    counted = CountingClassifier(head).eval()
    ours = resolve_attack("apgd-ce+apgd-t").with_iterations(a["iterations"])
    ref = resolve_attack("ref:apgd-ce+apgd-t").with_iterations(a["iterations"])
    clean_ok = predict(head, x, bs) == y
    info = {"model": "tiny-clip", "n_samples": n, "split": "shapes test", "eps": "4/255", "batch_size": bs,
            "attack": f"apgd-ce+apgd-t, {a['iterations']} iterations each, 1 restart, 7 targets (8 classes)",
            "clean": round(clean_ok.float().mean().item(), 4)}
    rec.put("ensemble", info)

    def ours_run(precision):
        out = run_ensemble(ours, counted, x, y, EPS, seed=0, batch_size=bs,
                           autocast=lambda: autocast_for(precision, device))
        return out.x_adv, out.unconfirmed

    def ref_run(_precision):
        return run_reference(ref, counted, x, y, EPS, seed=0, batch_size=bs), None

    if a["warmup"]:  # kernel selection, cuBLAS handles, pyautoattack's first call: outside the timers
        w = slice(0, min(16, n))
        run_ensemble(ours.with_iterations(2), head, x[w], y[w], EPS, batch_size=bs)
        run_reference(ref.with_iterations(2), head, x[w], y[w], EPS, batch_size=bs)
    base = None
    for name, precision, fn in (("ours", "fp32", ours_run), ("reference", "fp32", ref_run), ("ours", "bf16", ours_run)):
        log(f"attacks: tiny-clip {name} {precision}, {n} images")

        def measure(name=name, precision=precision, fn=fn):
            counted.reset()
            sync(device)
            t0 = time.perf_counter()
            x_adv, unconfirmed = fn(precision)
            sync(device)
            seconds = time.perf_counter() - t0
            counts = (counted.grad_forward, counted.backprop, counted.nograd_forward)
            check_perturbation(x_adv, x, EPS)
            pred = predict(head, x_adv, bs)
            fooled = clean_ok & (pred != y)
            return {"implementation": name, "precision": precision, "status": "ok",
                    "robust": round((pred == y).float().mean().item(), 4), "seconds": round(seconds, 2),
                    "grad_forward": counts[0], "backprop": counts[1], "nograd_forward": counts[2],
                    "unconfirmed": unconfirmed, "fooled": int(fooled.sum())}

        row = guarded(rec, f"attacks ensemble {name} {precision}", measure)
        row = row or {"implementation": name, "precision": precision, "status": "failed",
                      "error": rec.data["errors"][-1]}
        if row["status"] == "ok":
            base = base or row["seconds"]
            row["time_vs_ours_fp32"] = round(row["seconds"] / base, 3)
        rec.append("ensemble_rows", row)
    rows = {(r["implementation"], r["precision"]): r for r in rec.data["results"].get("ensemble_rows", [])}
    fp32, bf16 = rows.get(("ours", "fp32"), {}), rows.get(("ours", "bf16"), {})
    if fp32.get("status") == "ok" and bf16.get("status") == "ok":
        rec.put("precision", {"robust_fp32": fp32["robust"], "robust_bf16": bf16["robust"],
                              "bf16_minus_fp32_points": round(100 * (bf16["robust"] - fp32["robust"]), 2),
                              "unconfirmed_bf16": bf16["unconfirmed"],
                              "note": "unconfirmed = bf16 successes the float32 confirmation rejected "
                                      "(EnsembleOutcome.unconfirmed); every counted success is re-checked in fp32"})


def _per_iteration_rows(rec: Recorder, a: dict, device: torch.device) -> None:
    for arch, px, b in a["per_iter_models"]:
        guarded(rec, f"per-iteration {arch}", _per_iteration_model, rec, a, device, arch, px, b)
        free(device)


def _per_iteration_model(rec: Recorder, a: dict, device: torch.device, arch: str, px: int, b: int) -> None:
    """APGD-CE iterations on ``b`` images through a random-init ``arch`` zero-shot head: ours (fp32, bf16), the
    reference (fp32), every iteration run (no early stop), timed after a 1-iteration warm-up on CUDA."""
    from attack_speed import CountingClassifier
    from pyautoattack.autopgd_base import APGDAttack

    from simclip_bench.attacks.apgd import APGD
    from simclip_bench.attacks.base import ClassifierObjective
    from simclip_bench.data.shapes import ShapesDataset
    from simclip_bench.devices import autocast_for
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    k = a["per_iter_iterations"]
    model = random_model(arch, px, device)
    data = ShapesDataset("test", size=b, image_size=px)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, data.classnames, data.templates)).eval()
    counted = CountingClassifier(head).eval()
    x, y = (t.to(device) for t in data.tensors())
    idx = torch.arange(b, device=device)

    def ours(precision, n_iter):
        attack = APGD(EPS, n_iter=n_iter, batch_size=b, stop_on_success=False)
        with autocast_for(precision, device):
            attack.run(ClassifierObjective(counted, y, "ce"), x, idx)

    def ref(_precision, n_iter):
        attack = APGDAttack(counted, n_iter=n_iter, norm="Linf", eps=EPS, seed=0, device=str(device), n_restarts=1,
                            loss="ce", rho=0.75, eot_iter=1, verbose=False)
        attack.init_hyperparam(x)
        attack.attack_single_run(x, y)

    def measure(name, precision, fn):
        if a["warmup"]:
            fn(precision, 1)
        counted.reset()
        sync(device)
        t0 = time.perf_counter()
        fn(precision, k)
        sync(device)
        seconds = time.perf_counter() - t0
        evals = counted.grad_forward
        return {"model": arch, "image_size": px, "batch": b, "implementation": name, "precision": precision,
                "status": "ok", "iterations": k, "seconds": round(seconds, 3), "grad_forward": evals,
                "ms_per_iteration": round(1000 * seconds / (evals / b), 2) if evals else None,
                "ms_per_image_gradient": round(1000 * seconds / evals, 3) if evals else None}

    base = None
    for name, precision, fn in (("ours", "fp32", ours), ("ours", "bf16", ours), ("reference", "fp32", ref)):
        log(f"attacks: per-iteration {arch} {px}px batch {b} {name} {precision}")
        row = guarded(rec, f"per-iteration {arch} {name} {precision}", measure, name, precision, fn)
        row = row or {"model": arch, "image_size": px, "batch": b, "implementation": name, "precision": precision,
                      "status": "failed", "error": rec.data["errors"][-1]}
        if row["status"] == "ok" and row["ms_per_image_gradient"]:
            base = base or row["ms_per_image_gradient"]
            row["vs_ours_fp32"] = round(row["ms_per_image_gradient"] / base, 3)
        rec.append("per_iteration_rows", row)


def _host_syncs(rec: Recorder, a: dict, device: torch.device) -> None:
    """Our ensemble (bf16) once under ``torch.cuda.set_sync_debug_mode("warn")``: synchronising calls by line."""
    if device.type != "cuda":
        rec.put("host_syncs", "n/a (CPU dry run: sync debug mode is CUDA only)")
        return
    from simclip_bench.attacks.apgd import APGD
    from simclip_bench.attacks.ensemble import run_ensemble
    from simclip_bench.attacks.registry import resolve_attack
    from simclip_bench.devices import autocast_for

    head, x, y = _tiny_head(device, a["sync_samples"])
    spec = resolve_attack("apgd-ce+apgd-t").with_iterations(a["iterations"])
    iterations = Counter()
    real = APGD._iterate

    def counting(self, *args, **kwargs):
        iterations["n"] += 1
        return real(self, *args, **kwargs)

    run_ensemble(spec, head, x[:8], y[:8], EPS)  # warm-up, unwatched
    with warnings.catch_warnings(record=True) as caught, mock.patch.object(APGD, "_iterate", counting):
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            torch.ones(1, device=device).item()  # a known sync: proves the warnings reach Python's warnings
            probe = len(caught)
            run_ensemble(spec, head, x, y, EPS, autocast=lambda: autocast_for("bf16", device))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    if not probe:
        raise RuntimeError("sync debug mode 'warn' raised no Python warning for a known .item() sync; "
                           "the count would read 0 whatever the code does")
    syncs = [w for w in caught[probe:] if "synchroniz" in str(w.message).lower()]
    where = Counter()
    for w in syncs:
        path = Path(w.filename)
        where[f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{w.lineno}"] += 1
    rec.put("host_syncs", {"n_samples": len(x), "apgd_iterations": iterations["n"], "warnings": len(syncs),
                           "per_iteration": round(len(syncs) / max(iterations["n"], 1), 3),
                           "by_line": dict(where.most_common(20)),
                           "note": "APGD batch iterations (_iterate calls) under sync debug 'warn'; refill_every is "
                                   "10 on CUDA"})


def part_attacks(rec: Recorder, s: dict) -> None:
    device = torch.device(s["device"])
    a = s["sizes"]["attacks"]
    guarded(rec, "attacks ensemble", _ensemble_rows, rec, a, device)
    free(device)
    guarded(rec, "attacks per-iteration", _per_iteration_rows, rec, a, device)
    free(device)
    guarded(rec, "attacks host syncs", _host_syncs, rec, a, device)


# ------------------------------------------------------------------------------------------------ CLI


def child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_command(argv: list[str], timeout: float) -> dict:
    """Run ``argv`` from the repository root in its own process group; status, seconds, exit code, last error line.

    At the limit the group gets SIGTERM (torchrun passes it on to its workers), then SIGKILL."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        stdout, stderr = proc.communicate()
        print(stdout[-3000:], stderr[-3000:], sep="\n", flush=True)
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "rc": None,
                "error": f"timed out after {timeout:.0f} s", "tail": stderr[-2000:]}
    seconds = round(time.perf_counter() - t0, 1)
    print(stdout[-3000:], stderr[-3000:], sep="\n", flush=True)
    lines = [ln for ln in stderr.splitlines() + stdout.splitlines() if ln.strip()]
    error = None if proc.returncode == 0 else error_line(stderr + "\n" + stdout, proc.returncode)
    return {"status": "ok" if proc.returncode == 0 else "failed", "seconds": seconds, "rc": proc.returncode,
            "error": error, "tail": "\n".join(lines[-15:])}


def error_line(output: str, rc: int | None) -> str:
    """The most telling line of a failed command: the CLI's one-line error, else the last exception line
    (torchrun's ChildFailedError banner names no cause), else the last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("simclip: error:"):
            return ln
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        exception = ":" in ln and head.replace(".", "").replace("_", "").isalnum()
        if exception and head.endswith(("Error", "Exception")) and not head.endswith("ChildFailedError"):
            return ln[:400]
    return lines[-1][:400] if lines else f"exit code {rc}"


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the process group that ``proc`` leads (it was started with ``start_new_session``), a grace
    period, then SIGKILL to whatever of the group is left (e.g. torchrun's workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _results_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"model": r["model"], "attack": r["attack"], "eps": r["eps_text"], "metric": r["metric"],
             "value": round(float(r["value"]), 4), "n_samples": int(r["n_samples"]), "seconds": r.get("seconds"),
             "device": r.get("device")} for r in rows]


def part_cli(rec: Recorder, s: dict) -> None:
    c, dev, work = s["sizes"]["cli"], s["device"], Path(s["work"]) / "cli"
    py = [sys.executable, "-m", "simclip_bench"]
    run_dir = work / "run"
    commands = [
        ("train", py + ["train", "--steps", str(c["train_steps"]), "--batch-size", str(c["train_batch"]),
                        "--train-size", str(c["train_size"]), "--attack-steps", str(c["attack_steps"]),
                        "--probe-size", str(c["probe_size"]), "--warmup-steps", "1", "--device", dev,
                        "--out", str(run_dir)], None),
        ("eval", py + ["eval", "--model", "tiny-clip", "--model", str(run_dir), "--n-samples", str(c["eval_samples"]),
                       "--iterations", str(c["eval_iterations"]), "--eps", "4/255", "--device", dev,
                       "--out", str(work / "zeroshot")], work / "zeroshot" / "results.csv"),
        ("eval --task vqa", py + ["eval", "--task", "vqa", "--model", "tiny-clip", "--model", str(run_dir),
                                  "--n-samples", str(c["vqa_samples"]), "--iterations", str(c["vqa_iterations"]),
                                  "--eps", "4/255", "--device", dev, "--out", str(work / "vqa")],
         work / "vqa" / "results.csv"),
    ]
    for name, argv, results in commands:
        log(f"cli: simclip {name}")
        out = run_command(argv, c["timeout_each"])
        row = {"command": "simclip " + " ".join(argv[3:]).replace(str(work), "<work>"), "name": name, **out}
        if out["status"] == "ok" and name == "train":
            summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            config = json.loads((run_dir / "config.json").read_text())
            row["results"] = {"device": config.get("device"), "precision": config.get("precision"),
                              "val_zero_shot_before": summary.get("val_zero_shot_before"),
                              "val_zero_shot_after": summary.get("val_zero_shot_after")}
        elif out["status"] == "ok" and results is not None:
            row["results"] = guarded(rec, f"cli {name} results", _results_csv, results)
            for r in row["results"] or []:
                r["model"] = r["model"].replace(str(run_dir), "<run>")
        if out["status"] != "ok":
            rec.data["errors"].append(f"simclip {name}: {out['error']}")
        rec.append("commands", row)


# ------------------------------------------------------------------------------------------------ LLaVA


def _tiny_llava_builders():
    """``tiny_llava`` and ``tiny_tokenizer`` of tests/test_vlm_llava.py: the project's offline tiny random LLaVA."""
    spec = importlib.util.spec_from_file_location("_gpu_check_llava", ROOT / "tests" / "test_vlm_llava.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_llava, module.tiny_tokenizer


def part_llava(rec: Recorder, s: dict) -> None:
    from simclip_bench.data.shapes import ShapesDataset
    from simclip_bench.devices import resolve_precision
    from simclip_bench.tasks.vlm_attack import VLMAttackConfig, attack_vlm, targeted_string_attack
    from simclip_bench.vlm.load import load_vlm

    device = torch.device(s["device"])
    v = s["sizes"]["llava"]
    tiny_llava, tiny_tokenizer = _tiny_llava_builders()
    folder = Path(tempfile.mkdtemp(dir=s["work"], prefix="llava-"))
    tiny_llava().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    t0 = time.perf_counter()
    vlm = load_vlm(f"llava:{folder}", "tiny-clip", device).vlm
    info = {"vlm": "tiny random LLaVA (tests/test_vlm_llava.py) through load_vlm('llava:<folder>', 'tiny-clip')",
            "device": str(vlm.device), "load_s": round(time.perf_counter() - t0, 2), "n_images": v["n"]}
    rec.put("llava", info)
    x = ShapesDataset("test", size=v["n"], image_size=vlm.image_size).tensors()[0].to(device)
    prompts = [vlm.caption_prompt()] * v["n"]
    t0 = time.perf_counter()
    clean = vlm.generate(x, prompts, max_new_tokens=v["max_new_tokens"])
    sync(device)
    info.update(generate_s=round(time.perf_counter() - t0, 3), clean_texts=clean[:4])
    rec.put("llava", info)
    precision = resolve_precision("auto", device)
    config = VLMAttackConfig(eps=EPS, n_iter=v["iterations"], targets=("Maybe", "Word"), batch_size=v["n"],
                             max_new_tokens=v["max_new_tokens"], precision=precision)

    changed: set[int] = set()

    def score(indices, texts):  # constant, so no sample stops early and every run of the ensemble runs
        changed.update(i for i, t in zip(indices, texts, strict=True) if t != clean[i])
        return [1.0] * len(texts)

    runs: list[str] = []
    t0 = time.perf_counter()
    outcome = attack_vlm(vlm, x, prompts, [["a red circle", "a blue square"]] * v["n"], score, clean,
                         [1.0] * v["n"], config, on_run_done=runs.append)
    sync(device)
    info.update(ensemble_s=round(time.perf_counter() - t0, 2), ensemble_precision=precision, ensemble_runs=runs,
                texts_changed=len(changed), worst_case_texts=outcome.texts[:4], ensemble_iterations=v["iterations"])
    rec.put("llava", info)
    t0 = time.perf_counter()
    _, texts, success = targeted_string_attack(vlm, x[:2], prompts[:2], "Maybe", EPS, n_iter=v["iterations"],
                                               batch_size=2, max_new_tokens=v["max_new_tokens"])
    sync(device)
    info.update(targeted_s=round(time.perf_counter() - t0, 2), targeted_success=success, targeted_texts=texts)
    rec.put("llava", info)


# ------------------------------------------------------------------------------------------------ DDP


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]


def part_ddp(rec: Recorder, s: dict) -> None:
    d, dev, work = s["sizes"]["ddp"], s["device"], Path(s["work"]) / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    args = ["--steps", str(d["steps"]), "--batch-size", str(d["batch"]), "--train-size", str(d["batch"] * 2),
            "--probe-size", "0", "--attack-steps", str(d["attack_steps"]), "--warmup-steps", "1", "--log-every", "1",
            "--device", dev]
    log("ddp: torchrun --nproc_per_node 1 -m simclip_bench train")
    cli = run_command(_torchrun() + ["-m", "simclip_bench", "train", *args, "--out", str(work / "cli")],
                      d["timeout_each"])
    if cli["status"] == "ok":
        summary = json.loads((work / "cli" / "metrics.jsonl").read_text().splitlines()[-1])
        cli["results"] = {"world_size": summary["world_size"], "ranks_agree": summary["ranks_agree"],
                          "process_group": "none: with WORLD_SIZE=1 the library trains as a single process "
                                           "(train/distributed.py launched_by_torchrun)"}
    else:
        rec.data["errors"].append(f"torchrun -m simclip_bench train: {cli['error']}")
    rec.put("torchrun_cli", cli)
    log("ddp: torchrun, 1-rank process group through the library's DDP path")
    result = work / "worker.json"
    settings = work / "worker-settings.json"
    settings.write_text(json.dumps({"device": dev, "out": str(work / "pg"), "result": str(result), **d}))
    pg = run_command(_torchrun() + [str(Path(__file__).with_name("gpu_check.py")), "--ddp-worker", str(settings)],
                     d["timeout_each"])
    if pg["status"] == "ok":
        pg["results"] = json.loads(result.read_text())
    else:
        rec.data["errors"].append(f"1-rank process group: {pg['error']}")
    rec.put("process_group", pg)


def ddp_worker(settings_path: str) -> None:
    """Under torchrun with one process: the library's DDP path (process group, DDP wrapper, all-reduces,
    object collectives), which it takes only for WORLD_SIZE > 1, forced on for a group of one."""
    from simclip_bench.train import distributed as ddp
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.loop import train

    d = json.loads(Path(settings_path).read_text())
    seen: dict = {}
    real_init = ddp.dist.init_process_group

    def init(backend=None, *args, **kwargs):
        seen["backend"] = backend
        return real_init(backend, *args, **kwargs)

    cfg = TrainConfig(steps=d["steps"], batch_size=d["batch"], train_size=d["batch"] * 2, probe_size=0,
                      attack_steps=d["attack_steps"], warmup_steps=1, log_every=1, device=d["device"], out=d["out"])
    with mock.patch.object(ddp, "launched_by_torchrun", lambda: True), \
            mock.patch.object(ddp.DistInfo, "enabled", property(lambda self: True)), \
            mock.patch.object(ddp.dist, "init_process_group", init):
        run_dir = train(cfg, log=lambda *_: None)
    summary = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    config = json.loads((Path(run_dir) / "config.json").read_text())
    Path(d["result"]).write_text(json.dumps({
        "backend": seen.get("backend"), "device": config.get("device"), "world_size": summary["world_size"],
        "ranks_agree": summary["ranks_agree"], "steps": summary["step"],
        "process_group": "joined (DistInfo.enabled forced on): DDP wrapper, gradient all-reduce, the divergence "
                         "all-reduce, metric all-reduces and object collectives ran"}))


PARTS = {"env": part_env, "training": part_training, "compile": part_compile, "attacks": part_attacks, "cli": part_cli,
         "llava": part_llava, "ddp": part_ddp}
