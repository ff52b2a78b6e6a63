"""Scale-out of ``simclip eval``: which part of every cell this process evaluates, and on which GPU.

A *shard* ``K/N`` is process K of N (0-based). It is given explicitly (``--shard K/N``) or read from the
launcher's environment, in this order:

1. ``--shard K/N`` (always wins);
2. torchrun (one node or several): ``RANK`` / ``WORLD_SIZE``, GPU ``LOCAL_RANK``;
3. Slurm ``srun``: ``SLURM_PROCID`` of ``SLURM_STEP_NUM_TASKS`` (set inside a step only; the batch script
   itself, outside ``srun``, is not a step and is one task, so a plain ``python`` line in an ``--ntasks 8``
   allocation still evaluates everything); GPU ``SLURM_LOCALID``;
4. otherwise ``0/1``: everything.

A Slurm job *array* is never split automatically: an array element cannot know reliably how many elements
share its grid (a re-submitted ``sbatch --array=3`` sees a count of 1; an array that gives each element its
own ``--model`` is not one grid at all). An array shards with an explicit ``--shard $SLURM_ARRAY_TASK_ID/N``;
without it each element evaluates its whole grid, and :func:`launcher_notices` says so once.

No process group is joined: the processes never talk to each other. The result store coordinates them
(:mod:`simclip_bench.results.store`: appends under a file lock, one row per key).

**Balance: interleaved.** Shard K evaluates the samples at positions K, K+N, K+2N, ... of *every* cell's
fixed subset (:meth:`Shard.take`), so every process has work in every cell (a grid larger than the number
of processes leaves no GPU idle, and one big dataset is split as finely as a small one), and each gets an
even mix of cheap samples (fooled at once) and expensive ones (robust through APGD-CE and APGD-T, about
8x the cost). The subset is a seeded draw, so positions carry no order of difficulty. Each sample's attack
randomness is seeded by its dataset index, never by its position in a batch, so any split gives the same
per-sample outcomes as one process: sharding is exact. The reference backend (``ref:``, ``autoattack``) is
the exception: pyautoattack draws its random starts over a whole batch, so a sample's outcome depends on
its batch-mates. Its shards take whole batches instead (:meth:`Shard.take_batches`): batches K, K+N, ... of
``--batch-size`` consecutive positions, the very batches one process runs. Model load, text classifier and
clean pass happen once per process and cell.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from simclip_bench.errors import UserError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` (0-based); ``local_rank`` is the GPU it uses on its node, ``source``
    says where the numbers came from (``--shard``, ``torchrun``, ``srun`` or ``single``)."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None
    source: str = "single"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: positions ``index``, ``index + count``, ... (interleaved)."""
        return list(items[self.index::self.count])

    def take_batches(self, items: Sequence[T], batch_size: int) -> list[T]:
        """This shard's whole batches: batches ``index``, ``index + count``, ... of ``batch_size`` consecutive
        items, concatenated in order (cut into ``batch_size`` pieces again, they are one process's batches)."""
        starts = range(self.index * batch_size, len(items), self.count * batch_size)
        return [item for start in starts for item in items[start:start + batch_size]]

    def part(self, items: Sequence[T], batch_size: int, whole_batches: bool = False) -> list[T]:
        """:meth:`take_batches` when a sample's outcome depends on its batch (the reference backend), else
        :meth:`take`."""
        return self.take_batches(items, batch_size) if whole_batches else self.take(items)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


SINGLE = Shard()


def parse_shard(text: str) -> Shard:
    """``"K/N"`` with 0 <= K < N -> a Shard; anything else a UserError naming the fix."""
    match = _SHARD.match(text or "")
    if not match:
        raise UserError(f"--shard {text!r} is not K/N; write e.g. --shard 0/8 (this process's 0-based index "
                        "of 8)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise UserError(f"--shard {text}: the number of shards must be at least 1")
    if index >= count:
        raise UserError(f"--shard {text}: the index must be below {count} (0-based: 0/{count} to "
                        f"{count - 1}/{count})")
    return Shard(index, count, source="--shard")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _torchrun(env: Mapping[str, str]) -> Shard | None:
    world, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
    if world is None or rank is None or world < 2:
        return None
    return Shard(rank, world, _int(env, "LOCAL_RANK"), "torchrun")


def _srun(env: Mapping[str, str]) -> Shard | None:
    tasks = _int(env, "SLURM_STEP_NUM_TASKS")  # set inside an srun step only
    proc = _int(env, "SLURM_PROCID")
    if tasks is None or tasks < 2 or proc is None:
        return None
    return Shard(proc, tasks, _int(env, "SLURM_LOCALID"), "srun")


ARRAY_VARIABLE = "SLURM_ARRAY_TASK_ID"


def launcher_notices(explicit: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """One line for each thing about the launcher the user may not expect: a Slurm array element without
    ``--shard`` (evaluates its whole grid), a ``--shard`` given to every process of a launcher that started
    several (they all evaluate the same part)."""
    env = os.environ if env is None else env
    notices = []
    launched = _torchrun(env) or _srun(env)
    if explicit is None and _int(env, ARRAY_VARIABLE) is not None:
        where = f", split over the {launched.count} {launched.source} processes" if launched else ""
        notices.append(f"Slurm array task {env[ARRAY_VARIABLE].strip()} without --shard: this job evaluates its "
                       f"whole grid{where}. To split one grid over the array, pass --shard "
                       "$SLURM_ARRAY_TASK_ID/N (N = the array's size) or --balance dynamic")
    if explicit is not None and launched is not None:
        notices.append(f"--shard {explicit.strip()} given to all {launched.count} {launched.source} processes: each "
                       "evaluates that same part (--shard wins over the launcher)")
    return notices


def detect_shard(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Shard:
    """This process's shard: ``explicit`` (``--shard K/N``) if given, else torchrun's or srun's variables, else
    the whole grid (a Slurm array without ``--shard`` too). The GPU index (``local_rank``) comes from the
    launcher even when ``--shard`` is given."""
    env = os.environ if env is None else env
    launched = _torchrun(env) or _srun(env)
    if explicit is not None:
        shard = parse_shard(explicit)
        return Shard(shard.index, shard.count, launched.local_rank if launched else None, shard.source)
    if launched is None:
        return SINGLE
    if not 0 <= launched.index < launched.count:
        raise UserError(f"the launcher's variables give shard {launched} ({launched.source}); pass --shard K/N")
    return launched


def shard_device(device: torch.device, shard: Shard) -> torch.device:
    """Each process on its own GPU: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` when the launcher gave one
    (modulo the visible GPUs); an explicit ``cuda:N`` and a CPU stay as they are."""
    import torch

    if device.type != "cuda" or device.index is not None or shard.local_rank is None:
        return device
    index = shard.local_rank % max(torch.cuda.device_count(), 1)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
