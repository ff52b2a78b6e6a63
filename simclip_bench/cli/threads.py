"""``--threads N`` and the warning about a shared machine: torch's threads fighting other processes for the CPUs.

torch starts one thread per core. When other processes already keep the cores busy, those threads take
turns with them and with each other, and a command runs several times slower than with one thread (6-20x
was seen on a 2-core machine with one neighbour). The warning compares the 1-minute load average (which
counts this process too, so the rest of the machine is ``load - 1``) and torch's threads with the CPUs this
process may use; it is given once, when the first progress line starts, so that bad input still ends in
exactly one line.
"""
from __future__ import annotations

import os
import sys
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


def oversubscription(load: float | None = None, threads: int | None = None, cpus: int | None = None) -> str | None:
    """The warning line when torch's threads and the rest of the machine's load exceed the CPUs, else None."""
    if threads is None:
        if "torch" not in sys.modules:  # nothing computes yet
            return None
        threads = sys.modules["torch"].get_num_threads()
    load = os.getloadavg()[0] if load is None else load
    cpus = usable_cpus() if cpus is None else cpus
    others = max(0.0, load - 1.0)  # the load average counts this process too
    if threads <= 1 or others + threads <= cpus + 0.5:
        return None
    return (f"simclip: warning: the machine is busy (load average {load:.1f} on {cpus} CPUs) and torch runs "
            f"{threads} threads, which then wait for each other (often several times slower); pass --threads 1 "
            "(or set OMP_NUM_THREADS=1)")


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
