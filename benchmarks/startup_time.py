"""How long ``simclip`` takes to start: the median wall time of a few commands, each in a fresh process.

    OMP_NUM_THREADS=1 python benchmarks/startup_time.py            # 5 runs per command
    OMP_NUM_THREADS=1 python benchmarks/startup_time.py --runs 9 --top 15

Prints, per command, the median (and min, max) seconds over ``--runs`` fresh processes, with
``python -c pass`` and ``python -c "import torch"`` beside them for scale, then the ``--top`` slowest
imports of ``simclip --help`` by cumulative time (``python -X importtime``). The machine's load average is
printed first: on a shared machine every number moves with it. Results: ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIMCLIP = [sys.executable, "-m", "simclip_bench"]
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
    ("simclip --help", [*SIMCLIP, "--help"]),
    ("simclip eval --help", [*SIMCLIP, "eval", "--help"]),
    ("simclip ls attacks", [*SIMCLIP, "ls", "attacks"]),
    ("simclip ls models", [*SIMCLIP, "ls", "models"]),
    ("simclip ls objectives", [*SIMCLIP, "ls", "objectives"]),
    ("simclip ls protocols", [*SIMCLIP, "ls", "protocols"]),
    ("simclip eval --eps banana", [*SIMCLIP, "eval", "--eps", "banana"]),
    ("simclip eval --no-such-flag", [*SIMCLIP, "eval", "--no-such-flag"]),
]


def _time(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def import_offenders(top: int, cwd: Path) -> list[tuple[float, str]]:
    """The ``top`` modules with the largest cumulative import time in ``simclip --help`` (seconds, name)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "simclip_bench", "--help"], cwd=cwd,
                          capture_output=True, text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command (default 5)")
    parser.add_argument("--top", type=int, default=10, help="slowest imports of 'simclip --help' to list")
    args = parser.parse_args()
    cwd = Path(os.environ.get("TMPDIR", "/tmp"))  # no runs/ or results here: nothing a command could pick up
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {args.runs} runs each")
    print(f"{'command':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, command in COMMANDS:
        times = [_time(command, cwd) for _ in range(args.runs)]
        print(f"{name:<32} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")
    print("\nslowest imports of 'simclip --help' (cumulative seconds, one run; indentation = nesting):")
    for seconds, name in import_offenders(args.top, cwd):
        print(f"{seconds:>8.3f}  {name}")


if __name__ == "__main__":
    main()
