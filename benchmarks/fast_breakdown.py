"""Where a zero-shot eval's time goes: process CPU time per phase, for ``--protocol fast`` (its audit included)
against the full protocol (``--attack apgd-ce+apgd-t``), on the same images, through ``simclip eval``'s library
call. CPU time of the process (``time.process_time``) rather than wall time, so a busy machine does not move
the shares much; phases are exclusive (an attack's time does not include the logits it computes inside).

    OMP_NUM_THREADS=1 python benchmarks/fast_breakdown.py MODEL N EPS     # e.g. tiny-clip 400 2/255

It prints, per protocol, the CPU seconds per phase and the gradient evaluations per sample of each stored
setting, then the evaluation ratio with and without the audit and the CPU-time ratio.
"""
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import simclip_bench.attacks.ensemble as ens
import simclip_bench.tasks.zeroshot as zs
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval

clock = time.process_time
spent = defaultdict(float)
phase = []

def timed(name, fn):
    def wrapper(*a, **k):
        key = name(a, k) if callable(name) else name
        t0 = clock()
        phase.append(key)
        try:
            return fn(*a, **k)
        finally:
            phase.pop()
            dt = clock() - t0
            spent[key] += dt
            if phase:
                spent[phase[-1]] -= dt  # exclusive time
    return wrapper

ens._run_single = timed(lambda a, k: f"attack {a[0].name}" + (" (audit)" if AUDIT[0] else ""), ens._run_single)
ens._malt_targets = timed("MALT ranking", ens._malt_targets)
ens.logits_of = timed("float32 logits (clean, checks)", ens.logits_of)
zs.preflight_checks = timed("masking checks", zs.preflight_checks)
zs.build_text_classifier = timed("text classifier", zs.build_text_classifier)
zs.ZeroShotClassifier = zs.ZeroShotClassifier
AUDIT = [False]
real_attack = zs._attack
def attack(spec, *a, **k):
    AUDIT[0] = spec.name == "apgd-ce+apgd-t" and PROTOCOL[0] == "fast"
    return real_attack(spec, *a, **k)
zs._attack = attack
PROTOCOL = [None]

model, n, eps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
OUT = Path("fast-breakdown-out")
report = {}
for protocol, attack_name in (("fast", None), ("default", "apgd-ce+apgd-t")):
    PROTOCOL[0] = protocol
    spent.clear()
    out = OUT / protocol
    shutil.rmtree(out, ignore_errors=True)
    t0, w0 = clock(), time.time()
    res = run_eval(EvalRequest(models=[model], protocol=protocol, attack=attack_name, eps=[eps], n_samples=n,
                               out=out, device="cpu"))
    total, wall = clock() - t0, time.time() - w0
    import pandas as pd
    samples = pd.read_csv(out / "samples.csv")
    evals = samples.groupby("attack")["grad_evals"].sum() / n
    spent["other (setup, store, loading)"] = total - sum(spent.values())
    report[protocol] = {"cpu_s": round(total, 1), "wall_s": round(wall, 1),
                        "evals_per_sample": evals.round(1).to_dict(),
                        "phases": {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}}
    print(protocol, json.dumps(report[protocol], indent=1), flush=True)
fast, full = report["fast"], report["default"]
fast_evals, full_evals = sum(fast["evals_per_sample"].values()), sum(full["evals_per_sample"].values())
attack_only = fast["evals_per_sample"].get("apgd-ce+apgd-t-malt", fast_evals)
print(f"evals ratio (audit included) {full_evals / fast_evals:.2f}; evals ratio (fast attack only) "
      f"{full_evals / attack_only:.2f}; cpu ratio {full['cpu_s'] / fast['cpu_s']:.2f}")
