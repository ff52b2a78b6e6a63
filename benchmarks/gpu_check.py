"""The CUDA path, measured in one call: a prepared device check for a lent H200, and a CPU dry run of it.

One command runs every part in its own process with its own time limit (one hang or CUDA error still
returns the others) and writes ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` to ``--out``
(default ``$OUT``, the device tool's folder, else ``gpu-check-out``). Nothing is downloaded: the models are
random-init open_clip ``ViT-B-32`` / ``ViT-L-14`` (no weights), the built-in ``tiny-clip`` / ``tiny-vlm`` and a
tiny random LLaVA built from configs (``tests/test_vlm_llava.py``).

Parts (``benchmarks/gpu_check_parts.py``), in this order, each with its limit in seconds (CUDA run):

* ``env`` (60): torch, CUDA, cuDNN, GPU, driver, open_clip, transformers, git sha, a digest of the sources;
* ``ddp`` (50): ``torchrun --nproc_per_node 1 -m simclip_bench train`` (with one process the library runs
  single-process), then a 1-rank process group (NCCL on CUDA, gloo on a CPU) through the library's DDP path;
* ``cli`` (100): ``simclip train --steps 20``, ``simclip eval`` (1000 images, APGD-CE 100 it.) and
  ``simclip eval --task vqa`` (100 samples, RobustVLM ensemble), all ``--device cuda``;
* ``llava`` (40): the tiny random LLaVA with tiny-clip swapped in: load, generate, the VLM ensemble attack and
  the targeted-string attack on the device;
* ``vlm-prompts`` (40): ``benchmarks/gpu_check_vlm_prompts.py``: LLaVA's RobustVLM prompt path (system sentence,
  pad-to-square, generation, the end token scored, an APGD step) and a tiny OpenFlamingo on the device;
* ``attacks`` (120): ``apgd-ce+apgd-t`` ours (fp32 and bf16) vs ``ref:apgd-ce+apgd-t`` on tiny-clip, the
  1000 shapes test images (wall time, gradient evaluations through benchmarks/attack_speed.py's counting
  wrapper, robust accuracy, bf16 successes rejected by the float32 confirmation); per-iteration cost on
  random-init ViT-B-32 / ViT-L-14 zero-shot heads (32 images, 10 iterations); host syncs under
  ``torch.cuda.set_sync_debug_mode("warn")``;
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

    python benchmarks/gpu_check.py --out $OUT                 # on a CUDA machine (docs/gpu-check.md)
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check
    python benchmarks/gpu_check.py --parts training,attacks   # a subset
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported: gpu_check_parts, attack_speed
from gpu_check_parts import PARTS, Recorder, ddp_worker, error_line, stop_group  # noqa: E402
from gpu_check_vlm_prompts import run as part_vlm_prompts  # noqa: E402

PARTS["vlm-prompts"] = part_vlm_prompts

HERE = Path(__file__).resolve().parent
ORDER = ("env", "ddp", "cli", "llava", "vlm-prompts", "attacks", "training", "compile")
SCHEMA = "simclip-bench gpu_check 1"

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
LIMITS = {"cuda": {"env": 60, "ddp": 50, "cli": 100, "llava": 40, "vlm-prompts": 40, "attacks": 120, "training": 110,
                   "compile": 150},
          "dry-run": {"env": 60, "ddp": 240, "cli": 300, "llava": 150, "vlm-prompts": 150, "attacks": 300,
                      "training": 300, "compile": 150}}
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


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def _num(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("" if c is None else str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def render_markdown(report: dict) -> str:
    env, parts = report.get("env") or {}, report["parts"]
    lines = [f"# GPU check: {report['mode']}, {report['created_at']}", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda_runtime')}, GPU {env.get('gpu_name') or 'none'} "
             f"(driver {env.get('driver')}), open_clip {env.get('open_clip')}, transformers {env.get('transformers')}, "
             f"git {str(env.get('git_sha'))[:12]}, sources {env.get('source_digest')}; "
             f"{report['total_seconds']} s of a {report['budget_s']} s budget.", ""]
    lines += _table(["part", "status", "s", "limit s", "error"],
                    [[n, p["status"], p["seconds"], p["limit_s"], p["error"]] for n, p in parts.items()])
    tr = parts.get("training", {}).get("results", {}) or parts.get("compile", {}).get("results", {})
    if _train_rows_of(report):
        lines += ["", f"## Training: one step of {tr.get('objective')}", "",
                  f"FLOPs: {tr.get('flop_counting')}.", ""]
        lines += _table(["model", "px", "batch", "variant", "status", "images/s", "peak GiB", "TFLOP/step",
                         "TFLOP/s", "MFU", "fwd-equiv./image", "attention"],
                        [[r["model"], r.get("image_size"), r["batch"], r["variant"], r["status"],
                          _num(r.get("images_per_s"), 2), _num(r.get("peak_mem_gib"), 2),
                          _num(r.get("tflop_per_step"), 3), _num(r.get("achieved_tflops"), 2), _pct(r.get("mfu")),
                          r.get("fwd_equivalents_per_image"), r.get("attention") or r.get("error")]
                         for r in _train_rows_of(report)])
    at = parts.get("attacks", {}).get("results", {})
    if at.get("ensemble_rows"):
        e = at.get("ensemble", {})
        lines += ["", f"## Attacks: {e.get('attack')}, {e.get('model')}, {e.get('n_samples')} {e.get('split')} "
                      f"images, eps {e.get('eps')}, batch {e.get('batch_size')}; clean {_pct(e.get('clean'))}", ""]
        lines += _table(["implementation", "precision", "status", "robust", "s", "grad fwd", "backprop", "no-grad fwd",
                         "time / ours fp32", "unconfirmed"],
                        [[r["implementation"], r["precision"], r["status"], _pct(r.get("robust")), r.get("seconds"),
                          r.get("grad_forward"), r.get("backprop"), r.get("nograd_forward"),
                          r.get("time_vs_ours_fp32"), r.get("unconfirmed")] for r in at["ensemble_rows"]])
    if at.get("precision"):
        p = at["precision"]
        lines += ["", f"bf16 vs fp32 search: robust {_pct(p['robust_bf16'])} vs {_pct(p['robust_fp32'])} "
                      f"({p['bf16_minus_fp32_points']:+.2f} points); bf16 successes rejected by the float32 "
                      f"confirmation: {p['unconfirmed_bf16']}."]
    if at.get("per_iteration_rows"):
        lines += ["", "## Per-iteration cost: APGD-CE on random-init zero-shot heads (every iteration run)", ""]
        lines += _table(["model", "px", "batch", "implementation", "precision", "status", "ms / iteration",
                         "ms / image-gradient", "vs ours fp32"],
                        [[r["model"], r["image_size"], r["batch"], r["implementation"], r["precision"], r["status"],
                          r.get("ms_per_iteration"), r.get("ms_per_image_gradient"), r.get("vs_ours_fp32")]
                         for r in at["per_iteration_rows"]])
    if "host_syncs" in at:
        hs = at["host_syncs"]
        lines += ["", "## Host syncs (torch.cuda.set_sync_debug_mode('warn'), ours bf16)", ""]
        if isinstance(hs, dict):
            lines += [f"{hs['warnings']} synchronising calls in {hs['apgd_iterations']} APGD iterations "
                      f"({hs['per_iteration']} per iteration), {hs['n_samples']} images.", ""]
            lines += _table(["where", "calls"], [[k, v] for k, v in hs["by_line"].items()])
        else:
            lines.append(str(hs))
    cl = parts.get("cli", {}).get("results", {})
    if cl.get("commands"):
        lines += ["", "## CLI end to end", ""]
        lines += _table(["command", "status", "s", "result"],
                        [[c["command"], c["status"], c["seconds"], _cli_summary(c)] for c in cl["commands"]])
    ll = parts.get("llava", {}).get("results", {}).get("llava")
    if ll:
        lines += ["", "## Tiny random LLaVA (tiny-clip tower)", ""]
        lines += _table(["device", "load s", "generate s", "ensemble s", "runs", "texts changed", "targeted s",
                         "targeted success"],
                        [[ll.get("device"), ll.get("load_s"), ll.get("generate_s"), ll.get("ensemble_s"),
                          " ".join(ll.get("ensemble_runs", [])), ll.get("texts_changed"), ll.get("targeted_s"),
                          ll.get("targeted_success")]])
    dd = parts.get("ddp", {}).get("results", {})
    if dd:
        lines += ["", "## DDP (torchrun, 1 process)", ""]
        rows = []
        for key, label in (("torchrun_cli", "torchrun -m simclip_bench train"), ("process_group", "1-rank group")):
            r = dd.get(key) or {}
            res = r.get("results") or {}
            rows.append([label, r.get("status"), r.get("seconds"), res.get("backend"), res.get("world_size"),
                         res.get("ranks_agree"), res.get("process_group") or r.get("error")])
        lines += _table(["run", "status", "s", "backend", "world size", "ranks agree", "note"], rows)
    return "\n".join(lines) + "\n"


def _train_rows_of(report: dict) -> list[dict]:
    return [r for name in ("training", "compile")
            for r in report["parts"].get(name, {}).get("results", {}).get("rows", [])]


def _cli_summary(c: dict) -> str:
    res = c.get("results")
    if c["status"] != "ok" or not res:
        return c.get("error") or ""
    if isinstance(res, dict):
        return (f"{res.get('device')}, {res.get('precision')}: held-out zero-shot "
                f"{_pct(res.get('val_zero_shot_before'))} -> {_pct(res.get('val_zero_shot_after'))}")
    return "; ".join(f"{r['model'].split('/')[-1]} {r['attack']} {r['eps'] if r['attack'] != 'none' else ''} "
                     f"{r['value']:.3f}".replace("  ", " ") for r in res)


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every part at toy size on the CPU")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default $OUT, else gpu-check-out)")
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
                settings["known_flops"] = {f"{r['model']}|{r['image_size']}|{r['batch']}": [
                    r["flops_per_step"], r["fwd_flops_per_image"]] for r in _train_rows_of(report)
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
        ddp_worker(args.ddp_worker)
        return 0
    settings = json.loads(Path(args.settings).read_text())
    rec = Recorder(Path(settings["result"]))
    try:
        PARTS[args.child](rec, settings)
    except Exception as e:  # noqa: BLE001 - recorded for the report; the exit code says it failed
        rec.fail(args.child, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
