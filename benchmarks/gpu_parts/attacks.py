"""Part ``attacks``: ``apgd-ce+apgd-t`` ours (fp32 and bf16) against ``ref:apgd-ce+apgd-t`` on tiny-clip and the
shapes test images (wall time, gradient evaluations through ``benchmarks/attack_speed.py``'s counting wrapper,
robust accuracy, bf16 successes the float32 confirmation rejected); the per-iteration cost on random-init
ViT-B-32 / ViT-L-14 zero-shot heads; host syncs under ``torch.cuda.set_sync_debug_mode("warn")`` (CUDA only).
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from pathlib import Path
from unittest import mock

import torch

from gpu_parts.common import EPS, ROOT, Recorder, free, guarded, log, sync
from gpu_parts.markdown import pct, table
from gpu_parts.random_models import random_model


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
    from simclip_bench.attacks import progress as attack_progress
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
    # with a listener, as under the CLI, so that the progress reports (attacks/progress.py) are counted too
    with warnings.catch_warnings(record=True) as caught, mock.patch.object(APGD, "_iterate", counting), \
            attack_progress.listening(lambda status: status.describe()):
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


def run(rec: Recorder, s: dict) -> None:
    device = torch.device(s["device"])
    a = s["sizes"]["attacks"]
    guarded(rec, "attacks ensemble", _ensemble_rows, rec, a, device)
    free(device)
    guarded(rec, "attacks per-iteration", _per_iteration_rows, rec, a, device)
    free(device)
    guarded(rec, "attacks host syncs", _host_syncs, rec, a, device)


def markdown(report: dict) -> list[str]:
    at = report["parts"].get("attacks", {}).get("results", {})
    lines: list[str] = []
    if at.get("ensemble_rows"):
        e = at.get("ensemble", {})
        lines += ["", f"## Attacks: {e.get('attack')}, {e.get('model')}, {e.get('n_samples')} {e.get('split')} "
                      f"images, eps {e.get('eps')}, batch {e.get('batch_size')}; clean {pct(e.get('clean'))}", ""]
        lines += table(["implementation", "precision", "status", "robust", "s", "grad fwd", "backprop", "no-grad fwd",
                        "time / ours fp32", "unconfirmed"],
                       [[r["implementation"], r["precision"], r["status"], pct(r.get("robust")), r.get("seconds"),
                         r.get("grad_forward"), r.get("backprop"), r.get("nograd_forward"),
                         r.get("time_vs_ours_fp32"), r.get("unconfirmed")] for r in at["ensemble_rows"]])
    if at.get("precision"):
        p = at["precision"]
        lines += ["", f"bf16 vs fp32 search: robust {pct(p['robust_bf16'])} vs {pct(p['robust_fp32'])} "
                      f"({p['bf16_minus_fp32_points']:+.2f} points); bf16 successes rejected by the float32 "
                      f"confirmation: {p['unconfirmed_bf16']}."]
    if at.get("per_iteration_rows"):
        lines += ["", "## Per-iteration cost: APGD-CE on random-init zero-shot heads (every iteration run)", ""]
        lines += table(["model", "px", "batch", "implementation", "precision", "status", "ms / iteration",
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
            lines += table(["where", "calls"], [[k, v] for k, v in hs["by_line"].items()])
        else:
            lines.append(str(hs))
    return lines
