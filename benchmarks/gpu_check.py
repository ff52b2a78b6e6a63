"""The CUDA path, measured in one call on any CUDA machine (docs/gpu-check.md), and a CPU dry run of it.

One command runs every part in its own process with its own time limit (one hang or CUDA error still
returns the others) and writes ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` to ``--out``
(default ``$OUT`` when set, else ``gpu-check-out``). Nothing is downloaded: the models are
random-init open_clip ``ViT-B-32`` / ``ViT-L-14`` (no weights), the built-in ``tiny-clip`` / ``tiny-vlm`` and a
tiny random LLaVA built from configs (``tests/test_vlm_llava.py``).

Parts (:data:`PARTS`, one module each under ``benchmarks/gpu_parts/``), in this order, each with its limit in
seconds (CUDA run):

* ``env`` (60): torch, CUDA, cuDNN, GPU, driver, open_clip, transformers, git sha, a digest of the sources;
* ``ddp`` (50): ``torchrun --nproc_per_node 1 -m simclip_bench train`` (with one process the library runs
  single-process), then a 1-rank process group (NCCL on CUDA, gloo on a CPU) through the library's DDP path;
* ``cli`` (100): ``simclip train --steps 20``, ``simclip eval`` (1000 images, APGD-CE 100 it.) and
  ``simclip eval --task vqa`` (100 samples, RobustVLM ensemble), all ``--device cuda``;
* ``llava`` (40): the tiny random LLaVA with tiny-clip swapped in: load, generate, the VLM ensemble attack and
  the targeted-string attack on the device;
* ``vlm-prompts`` (40): ``benchmarks/gpu_parts/vlm_prompts.py``: LLaVA's RobustVLM prompt path (system sentence,
  pad-to-square, generation, the end token scored, an APGD step) and a tiny OpenFlamingo on the device;
* ``attacks`` (120): ``apgd-ce+apgd-t`` ours (fp32 and bf16) vs ``ref:apgd-ce+apgd-t`` on tiny-clip, the
  1000 shapes test images (wall time, gradient evaluations through benchmarks/attack_speed.py's counting
  wrapper, robust accuracy, bf16 successes rejected by the float32 confirmation); per-iteration cost on
  random-init ViT-B-32 / ViT-L-14 zero-shot heads (32 images, 10 iterations); host syncs under
  ``torch.cuda.set_sync_debug_mode("warn")``;
* ``plan`` (60): the cost plan's efficiency and per-call time on this GPU against what it assumes
  (``benchmarks/gpu_parts/plan.py``: APGD-CE on random-init ViT-B-32 / ViT-L-14 heads, bf16 and fp32, and
  tiny-clip with one image);
* ``training`` (110): one Sim-CLIP-anchored step (``TrainSession.step``), PGD-10, 224 px, random-init
  ViT-B-32 (batch 128) and ViT-L-14 (batch 64): fp32, bf16 autocast, bf16 + gradient checkpointing;
  images/s, peak memory, counted FLOPs and MFU, the SDPA kernel in use;
* ``compile`` (150, whatever is left): bf16 + ``--compile`` for both, last and in a process of its own, as
  compiling is the slowest and least certain step; MFU from the eager step's counted FLOPs.

The whole run is held to ``--budget`` seconds (470 on CUDA): a part gets at most what is left.

``--dry-run`` runs every part at toy size on the CPU and writes the same files with the same keys
(``tests/test_gpu_check.py`` runs it): 1 image of 224 px through ViT-B-32; ViT-L-14 once, in training, at 64 px
(the same architecture and code path at 1/15 of the compute; creating it at random takes 14 s here, so the
attack part's per-iteration rows use ViT-B-32 only); PGD-1; torch.compile through dynamo with the ``eager``
backend (inductor's C++ code generation took 91 s for one ViT-B-32 on the 2-core CPU); FLOPs counted on the
timed step; DDP with gloo; no sync debug (CUDA only). Its numbers only show that each path runs.

    python benchmarks/gpu_check.py --out gpu-check-out        # on a CUDA machine (docs/gpu-check.md)
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check
    python benchmarks/gpu_check.py --parts training,attacks   # a subset
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported: gpu_parts, attack_speed
from gpu_parts.common import Recorder  # noqa: E402
from gpu_parts.processes import error_line, stop_group  # noqa: E402

HERE = Path(__file__).resolve().parent
SCHEMA = "simclip-bench gpu_check 1"


@dataclass(frozen=True)
class Part:
    """A part: the module (importable from ``benchmarks/``) whose ``run(rec, settings)`` runs it, and its time
    limits in seconds on CUDA and in the dry run. The module may also have ``markdown(report) -> list[str]``."""

    module: str
    cuda_s: int
    dry_run_s: int


# Every part, in the order they run. To add one: a module with run(rec, settings) (see gpu_parts/__init__.py),
# one line here, and its sizes in SIZES below.
PARTS: dict[str, Part] = {
    "env": Part("gpu_parts.env", cuda_s=60, dry_run_s=60),
    "ddp": Part("gpu_parts.ddp", cuda_s=50, dry_run_s=240),
    "cli": Part("gpu_parts.cli", cuda_s=100, dry_run_s=300),
    "llava": Part("gpu_parts.llava", cuda_s=40, dry_run_s=150),
    "vlm-prompts": Part("gpu_parts.vlm_prompts", cuda_s=40, dry_run_s=150),
    "attacks": Part("gpu_parts.attacks", cuda_s=120, dry_run_s=300),
    "training": Part("gpu_parts.training", cuda_s=110, dry_run_s=300),
    "plan": Part("gpu_parts.plan", cuda_s=60, dry_run_s=200),
    "compile": Part("gpu_parts.compiled", cuda_s=150, dry_run_s=150),
}
ORDER = tuple(PARTS)

_TRAIN_CUDA = [[arch, 224, batch, variant] for arch, batch in (("ViT-B-32", 128), ("ViT-L-14", 64))
               for variant in ("fp32", "bf16", "bf16+grad-ckpt")]
_COMPILE_CUDA = [["ViT-B-32", 224, 128, "bf16+compile"], ["ViT-L-14", 224, 64, "bf16+compile"]]
SIZES = {
    "cuda": {
        "training": {"rows": _TRAIN_CUDA, "attack_steps": 10, "warmup": 1, "compile_extra_warmup": 1, "timed": 2,
                     "count_flops_in_timed_step": False},
        "compile": {"rows": _COMPILE_CUDA, "attack_steps": 10, "warmup": 1, "compile_extra_warmup": 1, "timed": 2,
                    "count_flops_in_timed_step": False},
        "attacks": {"n_samples": 1000, "batch_size": 500, "iterations": 100, "warmup": True, "sync_samples": 200,
                    "per_iter_models": [["ViT-B-32", 224, 32], ["ViT-L-14", 224, 32]], "per_iter_iterations": 10},
        "cli": {"train_steps": 20, "train_batch": 64, "train_size": 1280, "attack_steps": 10, "probe_size": 1000,
                "eval_samples": 1000, "eval_iterations": 100, "vqa_samples": 100, "vqa_iterations": 100,
                "timeout_each": 90},
        "llava": {"n": 8, "iterations": 20, "max_new_tokens": 8},
        "ddp": {"steps": 2, "batch": 8, "attack_steps": 2, "timeout_each": 45},
    },
    "dry-run": {
        "training": {"rows": [*[["ViT-B-32", 224, 1, v] for v in ("fp32", "bf16", "bf16+grad-ckpt")],
                              ["ViT-L-14", 64, 1, "fp32"]],
                     "attack_steps": 1, "warmup": 0, "compile_extra_warmup": 0, "timed": 1,
                     "count_flops_in_timed_step": True},
        "compile": {"rows": [["ViT-B-32", 224, 1, "bf16+compile"]], "attack_steps": 1, "warmup": 0,
                    "compile_extra_warmup": 0, "timed": 1, "count_flops_in_timed_step": True},
        "attacks": {"n_samples": 16, "batch_size": 16, "iterations": 3, "warmup": False, "sync_samples": 0,
                    "per_iter_models": [["ViT-B-32", 224, 1]], "per_iter_iterations": 1},
        "cli": {"train_steps": 2, "train_batch": 4, "train_size": 8, "attack_steps": 1, "probe_size": 8,
                "eval_samples": 6, "eval_iterations": 2, "vqa_samples": 2, "vqa_iterations": 1, "timeout_each": 150},
        "llava": {"n": 2, "iterations": 1, "max_new_tokens": 3},
        "ddp": {"steps": 2, "batch": 2, "attack_steps": 1, "timeout_each": 150},
    },
}
LIMITS = {"cuda": {name: part.cuda_s for name, part in PARTS.items()},
          "dry-run": {name: part.dry_run_s for name, part in PARTS.items()}}
BUDGET = {"cuda": 470, "dry-run": 1200}
MIN_START_S = 10  # a part is not started with less than this left of the budget


def run_part(name: str, settings: dict, limit: float, log_path: Path) -> dict:
    """Run part ``name`` in a child process (own process group) for at most ``limit`` seconds."""
    work = Path(settings["work"])
    result = work / f"{name}.json"
    settings = {**settings, "result": str(result)}
    settings_path = work / f"{name}-settings.json"
    settings_path.write_text(json.dumps(settings))
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    with open(log_path, "a") as log:
        log.write(f"\n===== part {name} (limit {limit:.0f} s) {dt.datetime.now().isoformat(timespec='seconds')}\n")
        log.flush()
        offset = log.tell()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", name, "--settings",
                                 str(settings_path)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_group(proc)
        seconds = time.perf_counter() - t0
    out = json.loads(result.read_text()) if result.is_file() else {"results": {}, "errors": []}
    with open(log_path) as log:
        log.seek(offset)
        tail = [ln.rstrip() for ln in log.read().splitlines() if ln.strip()]
    if timed_out:
        last = f" (last output: {tail[-1][:200]})" if tail else ""
        status, error = "timeout", f"timed out after {limit:.0f} s{last}"
    elif proc.returncode != 0 or out["errors"]:
        status = "failed"
        error = out["errors"][0] if out["errors"] else error_line("\n".join(tail), proc.returncode)
    else:
        status, error = "ok", None
    return {"status": status, "seconds": round(seconds, 1), "limit_s": round(limit), "rc": proc.returncode,
            "error": error, "errors": out["errors"], "results": out["results"]}


# ------------------------------------------------------------------------------------------------ rendering


def render_markdown(report: dict) -> str:
    """``gpu_check.md``: the environment, a row per part, then each part's own section (its ``markdown``)."""
    from gpu_parts.markdown import table

    env, parts = report.get("env") or {}, report["parts"]
    lines = [f"# GPU check: {report['mode']}, {report['created_at']}", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda_runtime')}, GPU {env.get('gpu_name') or 'none'} "
             f"(driver {env.get('driver')}), open_clip {env.get('open_clip')}, transformers {env.get('transformers')}, "
             f"git {str(env.get('git_sha'))[:12]}, sources {env.get('source_digest')}; "
             f"{report['total_seconds']} s of a {report['budget_s']} s budget.", ""]
    lines += table(["part", "status", "s", "limit s", "error"],
                   [[n, p["status"], p["seconds"], p["limit_s"], p["error"]] for n, p in parts.items()])
    for part in PARTS.values():
        section = getattr(importlib.import_module(part.module), "markdown", None)
        lines += section(report) if section else []
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every part at toy size on the CPU")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default $OUT when set, else gpu-check-out)")
    ap.add_argument("--device", default=None, help="default cuda; cpu with --dry-run")
    ap.add_argument("--parts", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 470 on CUDA)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (runs, result stores)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child or args.ddp_worker:
        return _child(args)

    mode = "dry-run" if args.dry_run else "cuda"
    device = args.device or ("cpu" if args.dry_run else "cuda")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(ORDER))
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("CUDA is not available here; run the CPU dry run with --dry-run")
    out = args.out or Path(os.environ.get("OUT") or "gpu-check-out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    log_path = out / "gpu_check.log"
    log_path.write_text("")
    budget = args.budget or BUDGET[mode]
    report = {"schema": SCHEMA, "mode": mode, "device": device,
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "budget_s": budget, "total_seconds": 0,
              "sizes": SIZES[mode], "env": None, "host_syncs": None, "parts": {}, "ok": False}
    settings = {"mode": mode, "device": device, "work": str(work), "sizes": SIZES[mode]}
    t0 = time.perf_counter()
    try:
        for name in [p for p in ORDER if p in parts]:
            left = budget - (time.perf_counter() - t0)
            if left < MIN_START_S:
                report["parts"][name] = {"status": "skipped", "seconds": 0, "limit_s": 0, "rc": None,
                                         "error": f"not started: {left:.0f} s of the budget left", "errors": [],
                                         "results": {}}
                continue
            print(f"[gpu_check] part {name} (limit {min(LIMITS[mode][name], left):.0f} s)", flush=True)
            if name == "compile":  # the eager step's counted FLOPs, for the compiled step's MFU
                from gpu_parts.training import train_rows_of

                settings["known_flops"] = {f"{r['model']}|{r['image_size']}|{r['batch']}": [
                    r["flops_per_step"], r["fwd_flops_per_image"]] for r in train_rows_of(report)
                    if r.get("flops_per_step") and r.get("fwd_flops_per_image")}
            report["parts"][name] = run_part(name, settings, min(LIMITS[mode][name], left), log_path)
            print(f"[gpu_check] part {name}: {report['parts'][name]['status']} in {report['parts'][name]['seconds']} s"
                  + (f" ({report['parts'][name]['error']})" if report["parts"][name]["error"] else ""), flush=True)
            _write(report, out, t0)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"[gpu_check] work folder kept: {work}")
    _write(report, out, t0)
    print(render_markdown(report))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'}, {log_path}")
    return 0 if report["ok"] else 1


def _write(report: dict, out: Path, t0: float) -> None:
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    report["env"] = report["parts"].get("env", {}).get("results", {}).get("env")
    report["host_syncs"] = report["parts"].get("attacks", {}).get("results", {}).get("host_syncs")
    report["ok"] = bool(report["parts"]) and all(p["status"] == "ok" for p in report["parts"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(render_markdown(report))


def _child(args) -> int:
    if args.ddp_worker:
        from gpu_parts.ddp import worker

        worker(args.ddp_worker)
        return 0
    settings = json.loads(Path(args.settings).read_text())
    rec = Recorder(Path(settings["result"]))
    try:
        importlib.import_module(PARTS[args.child].module).run(rec, settings)
    except Exception as e:  # noqa: BLE001 - recorded for the report; the exit code says it failed
        rec.fail(args.child, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
