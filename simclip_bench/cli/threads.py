"""``--threads N`` and the warning about a shared machine: torch's threads fighting other processes for the CPUs.

torch starts one thread per core. When other processes already keep the cores busy, those threads take
turns with them and with each other, and a command runs several times slower than with one thread (6-20x
was seen on a 2-core machine with one neighbour). The warning compares the CPUs that other processes keep
busy *now* (:func:`busy_elsewhere`: ``/proc/stat`` over a short window, on the CPUs this process may use,
less this process's own time) and torch's threads with those CPUs. Not the load average: it decays over a
minute, so it still counts the command that just finished and warned after every back-to-back command. Where
there is no ``/proc/stat`` the load average, less this process, stands in. The warning is given once, when the
first progress line starts, so that bad input still ends in exactly one line.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import typer

from simclip_bench.errors import UserError, check_count

_warned = False


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what a container or Slurm grants), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def threads_option() -> Any:
    """``--threads N``: torch's intra-op threads for this command (default: torch's own, one per core)."""
    return typer.Option(None, "--threads", help="Torch CPU threads (default: one per core). On a machine that "
                                                "other jobs keep busy, 1 is often several times faster.")


def apply_threads(threads: int | None) -> None:
    """Check ``--threads`` and set it (``torch.set_num_threads``); nothing when it was not given."""
    if threads is None:
        return
    check_count("--threads", threads)
    cpus = usable_cpus()
    if threads > cpus:
        raise UserError(f"--threads {threads} is more than the {cpus} CPUs this process may use; "
                        f"pass at most --threads {cpus}")
    import torch

    torch.set_num_threads(threads)


SAMPLE_SECONDS = 0.25  # the window over which the other processes' CPU use is measured
# The busy fields of a /proc/stat cpu line: user, nice, system, irq, softirq, steal (not idle, not iowait).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def _busy_ticks(cpus: set[int]) -> int:
    """Clock ticks the CPUs ``cpus`` have spent busy since boot (``/proc/stat``)."""
    total = 0
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                total += sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
    return total


def busy_elsewhere(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of this process's CPUs other processes keep busy now: the busy time of those CPUs over
    ``seconds``, less this process's own CPU time, per second. Raises OSError without ``/proc/stat``."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    tick = os.sysconf("SC_CLK_TCK")
    busy0, own0, t0 = _busy_ticks(cpus), time.process_time(), time.monotonic()
    time.sleep(seconds)
    busy1, own1, t1 = _busy_ticks(cpus), time.process_time(), time.monotonic()
    return max(0.0, ((busy1 - busy0) / tick - (own1 - own0)) / (t1 - t0))


def _others_now() -> tuple[float, str]:
    """(CPUs kept busy by other processes, how that was measured)."""
    try:
        others = busy_elsewhere()
        return others, f"other processes keep {others:.1f} CPUs busy"
    except (OSError, ValueError):  # no /proc/stat: the load average, less this process
        load = os.getloadavg()[0]
        return max(0.0, load - 1.0), f"load average {load:.1f}"


def oversubscription(others: float | None = None, threads: int | None = None, cpus: int | None = None,
                     measured: str | None = None) -> str | None:
    """The warning line when torch's threads and the CPUs ``others`` keep busy (default: measured now) exceed
    the CPUs, else None."""
    if threads is None:
        if "torch" not in sys.modules:  # nothing computes yet
            return None
        threads = sys.modules["torch"].get_num_threads()
    if threads <= 1:  # one thread: nothing to lower (and nothing to measure)
        return None
    if others is None:
        others, measured = _others_now()
    measured = measured or f"other processes keep {others:.1f} CPUs busy"
    cpus = usable_cpus() if cpus is None else cpus
    if others + threads <= cpus + 0.5:
        return None
    return (f"simclip: warning: the machine is busy ({measured}, of {cpus}) and torch runs {threads} threads, which "
            "then wait for each other (often several times slower); pass --threads 1 (or set OMP_NUM_THREADS=1)")


def warn_if_oversubscribed() -> None:
    """Print :func:`oversubscription`'s line on stderr, once per process."""
    global _warned
    if _warned:
        return
    _warned = True
    try:
        line = oversubscription()
    except OSError:  # no load average on this system
        return
    if line:
        print(line, file=sys.stderr, flush=True)
