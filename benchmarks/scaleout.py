"""Scale-out of ``simclip eval``: 2 processes x 1 thread (``--shard 0/2``, ``--shard 1/2``) against 1 process x
2 threads, on one zero-shot run under ``apgd-ce+apgd-t``.

    python benchmarks/scaleout.py --model runs/simclip --n-samples 500 --eps 4/255              # full size
    python benchmarks/scaleout.py --n-samples 8 --iterations 2                                  # toy size

Runs the same grid twice into fresh stores: once as one process with ``--threads 2``, once as two shards,
started together, each with ``--threads 1``, writing into one store. Prints a Markdown table: each run's wall
time (the sharded run's is its slower process), the throughput ratio (one process's wall time over the
sharded run's: above 1, two processes are faster), each shard's wall time and samples computed (balance:
the faster shard's time over the slower's), and whether the two tables are identical (values,
``n_samples``, intervals; run ids, times and seconds aside). Wall times include each process's start-up
(about 5 s: Python, torch, the model). Needs the machine to itself: on a shared machine every number moves.
Results: ``benchmarks/RESULTS.md``, "Scale-out".
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SIMCLIP = [sys.executable, "-m", "simclip_bench", "eval"]
VOLATILE = ["run_id", "created_at", "seconds"]


def grid(args: argparse.Namespace, out: Path) -> list[str]:
    return [*SIMCLIP, "--model", args.model, "--dataset", args.dataset, "--attack", "apgd-ce+apgd-t",
            "--eps", args.eps, "--n-samples", str(args.n_samples), "--iterations", str(args.iterations),
            "--batch-size", str(args.batch_size), "--device", "cpu", "--out", str(out)]


def run_together(commands: list[list[str]]) -> list[tuple[float, int]]:
    """Start every command at once; per command its wall time (s) and the samples it computed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for c in commands]
    ends: dict[int, float] = {}
    while len(ends) < len(procs):
        for k, p in enumerate(procs):
            if k not in ends and p.poll() is not None:
                ends[k] = time.perf_counter()
        time.sleep(0.05)
    out = []
    for k, p in enumerate(procs):
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(commands[k])}\n{stderr[-2000:]}")
        computed = re.search(r"(\d+) samples computed", " ".join(stdout.split()))
        out.append((ends[k] - start, int(computed.group(1)) if computed else -1))
    return out


def table(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv").drop(columns=VOLATILE)
    return frame.sort_values(["setting"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-clip", help="model spec (a run folder, a checkpoint, ...)")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--eps", default="4/255")
    parser.add_argument("--iterations", type=int, default=100, help="per gradient attack (APGD-CE, APGD-T)")
    parser.add_argument("--batch-size", type=int, default=50, help="working batch, also the unit of resume")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (the machine should be otherwise idle)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (one, one_computed), = run_together([[*grid(args, root / "one"), "--threads", "2"]])
        shards = run_together([[*grid(args, root / "two"), "--threads", "1", "--shard", f"{k}/2"] for k in range(2)])
        identical = table(root / "one").equals(table(root / "two"))
    slower = max(t for t, _ in shards)
    print(f"\n`simclip eval --model {args.model} --dataset {args.dataset} --attack apgd-ce+apgd-t --eps {args.eps} "
          f"--n-samples {args.n_samples} --iterations {args.iterations} --batch-size {args.batch_size}`\n")
    print("| run | wall time (s) | samples computed | throughput vs 1 x 2 threads |")
    print("|---|---:|---:|---:|")
    print(f"| 1 process x 2 threads | {one:.1f} | {one_computed} | 1.00 |")
    print(f"| 2 processes x 1 thread (`--shard`) | {slower:.1f} | {sum(c for _, c in shards)} | "
          f"**{one / slower:.2f}** |")
    for k, (t, c) in enumerate(shards):
        print(f"| &nbsp; shard {k}/2 | {t:.1f} | {c} | |")
    print(f"\nbalance (faster shard / slower shard): {min(t for t, _ in shards) / slower:.2f}; "
          f"tables identical: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
