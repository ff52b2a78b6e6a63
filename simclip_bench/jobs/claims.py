"""Dynamic balance (``--balance dynamic``): processes take chunks of a cell from the store as they go.

The static interleave (:mod:`simclip_bench.jobs.shards`) fixes each process's part before it starts, so one
slow GPU (a throttled card, a shared node, a slower model of card) holds the whole run up by the amount it
is slower. Here every process instead *claims* the next free chunk of a cell when it has finished its
last one, so a slow worker simply does fewer chunks, and any number of processes, started at any time, can
join (no shard count to agree on).

**Chunks** are ``chunk`` consecutive positions of the cell's fixed subset (``--batch-size``: one process's
batches, so the reference backend, whose outcomes depend on the composition of a batch, gets exactly the
batches of one process). Each sample's outcome does not depend on who evaluated it (per-sample seeds), so the
tables equal one process's.

**The claims file** ``OUT/claims.csv`` is an event log, appended under the store's lock
(:func:`simclip_bench.results.store.locked`): ``claim`` when a process takes a chunk, ``done`` once the
chunk's per-sample rows are in ``samples.csv``. A cell is named by a hash of everything that decides its
rows (:func:`cell_token`); a chunk is *free* unless it is done, or its latest claim is live. A claim is
dead, and its chunk free again, when

* its process ran on this machine and is gone (a killed worker is replaced at once by a re-run here);
* its worker has the same launcher identity as this process (``--shard 3/8``, ``torchrun 5/16``, ``srun
  2/4``): a re-run of that worker, e.g. a re-submitted Slurm job on another node, takes its chunks back;
* it is older than the lease (default one hour): a worker that died on another machine and is never re-run.

A lease that runs out on a worker still at work costs duplicated effort, never a wrong row: both write the
same per-sample outcomes, and the store keeps each key once. Completion (who writes the tables) is unchanged:
whoever finds every sample of a cell in the store after its own last append.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from simclip_bench.results.store import locked

if TYPE_CHECKING:
    import pandas as pd

    from simclip_bench.models.spec import LoadedModel
    from simclip_bench.tasks.zeroshot import CellPlan

CLAIMS_FILE = "claims.csv"
COLUMNS: tuple[str, ...] = ("event", "cell", "start", "stop", "worker", "host", "pid", "nonce", "at")
CLAIM, DONE = "claim", "done"
DEFAULT_LEASE_S = 3600.0
BALANCES: tuple[str, ...] = ("static", "dynamic")
SINGLE_WORKER = "single"  # no launcher identity: two such processes are never taken for one another


@dataclass(frozen=True)
class Worker:
    """Who claims: ``name`` is the launcher identity (``--shard 3/8``, ``torchrun 5/16``, ...; ``single``
    without one), ``host`` and ``pid`` this process, ``nonce`` tells it from an earlier process with its pid."""

    name: str
    host: str
    pid: int
    nonce: str = ""

    @staticmethod
    def this(name: str = SINGLE_WORKER) -> Worker:
        return Worker(name, socket.gethostname(), os.getpid(), secrets.token_hex(4))


def cell_token(parts: Sequence[object]) -> str:
    """A short hash naming a cell in the claims file; ``parts`` should hold everything that decides the cell's
    rows (model and its hash, dataset and its sample ids, settings, chunk size)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Event:
    event: str
    start: int
    stop: int
    worker: Worker
    at: float


@dataclass
class _Seen:
    """What this process has read of a claims file: its first ``offset`` bytes, as events per cell."""

    identity: tuple[int, int]
    offset: int = 0
    by_cell: dict[str, list[_Event]] = field(default_factory=dict)


_SEEN: dict[Path, _Seen] = {}  # per resolved claims file, in this process


def _events(out_dir: Path, cell: str) -> list[_Event]:
    """The claims file's events of ``cell``, in the order they were written (call under the lock). Only the
    part appended since this process last looked is parsed; a line cut by a crash is left for later."""
    path = (Path(out_dir) / CLAIMS_FILE).resolve()
    if not path.exists():
        _SEEN.pop(path, None)
        return []
    stat = os.stat(path)
    seen = _SEEN.get(path)
    if seen is None or seen.identity != (stat.st_dev, stat.st_ino) or seen.offset > stat.st_size:
        seen = _SEEN[path] = _Seen((stat.st_dev, stat.st_ino))
    if stat.st_size > seen.offset:
        with open(path, "rb") as f:
            f.seek(seen.offset)
            tail = f.read(stat.st_size - seen.offset)
        tail = tail[:tail.rfind(b"\n") + 1]
        for row in csv.reader(io.StringIO(tail.decode("utf-8"), newline="")):
            event = _parse(row)
            if event is not None:
                seen.by_cell.setdefault(row[1], []).append(event)
        seen.offset += len(tail)
    return seen.by_cell.get(cell, [])


def _parse(row: list[str]) -> _Event | None:
    """One line of the claims file as an event; the header and a damaged line are None (they claim nothing)."""
    if len(row) != len(COLUMNS) or row[0] not in (CLAIM, DONE):
        return None
    values = dict(zip(COLUMNS, row, strict=True))
    try:
        return _Event(values["event"], int(values["start"]), int(values["stop"]),
                      Worker(values["worker"], values["host"], int(values["pid"]), values["nonce"]),
                      float(values["at"]))
    except ValueError:
        return None


def _append(out_dir: Path, event: str, cell: str, start: int, stop: int, me: Worker, at: float) -> None:
    """One event appended durably (call under the lock)."""
    path = Path(out_dir) / CLAIMS_FILE
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writerow(COLUMNS)
    else:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                buffer.write("\n")  # a line cut by a crash ends here and is ignored as damaged
    writer.writerow([event, cell, start, stop, me.name, me.host, me.pid, me.nonce, f"{at:.3f}"])
    with open(path, "ab") as f:
        f.write(buffer.getvalue().encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def claim_is_live(claim: Worker, at: float, me: Worker, lease_s: float, now: float) -> bool:
    """Whether a claim made by ``claim`` at time ``at`` still keeps ``me`` off its chunk (module docstring)."""
    if claim == me:
        return True
    if now - at > lease_s:
        return False
    if claim.host == me.host:  # a pid equal to ours is a predecessor whose pid we got
        return claim.pid != me.pid and _running(claim.pid)
    return not (claim.name == me.name and claim.name != SINGLE_WORKER)  # else a re-run of that worker


class ChunkClaims:
    """The chunks of one cell, claimed one at a time from the store at ``out_dir``.

    Args:
        out_dir: the store (``--out``).
        cell: the cell's token (:func:`cell_token`).
        n: positions in the cell's fixed subset.
        chunk: positions per chunk (``--batch-size``).
        me: this process.
        already_done: ``(start, stop) -> bool``: whether the store already held every sample of those
            positions when the cell began (a re-run, or a run without claims, e.g. static shards).
        lease_s: age (s) after which any claim is dead.
        clock: the time, for tests.
    """

    def __init__(self, out_dir: Path, cell: str, n: int, chunk: int, me: Worker,
                 already_done: Callable[[int, int], bool] = lambda start, stop: False,
                 lease_s: float = DEFAULT_LEASE_S, clock: Callable[[], float] = time.time) -> None:
        self.out_dir, self.cell, self.n, self.chunk, self.me = Path(out_dir), cell, n, max(chunk, 1), me
        self.already_done, self.lease_s, self.clock = already_done, lease_s, clock
        self.claimed: list[tuple[int, int]] = []

    def claim(self) -> tuple[int, int] | None:
        """The next free chunk as (start, stop) positions, now claimed by this process; None when none is free."""
        with locked(self.out_dir):
            now = self.clock()
            done, latest = set(), {}
            for e in _events(self.out_dir, self.cell):
                if e.event == DONE:
                    done.add((e.start, e.stop))
                elif e.event == CLAIM:
                    latest[(e.start, e.stop)] = e
            for start in range(0, self.n, self.chunk):
                span = (start, min(start + self.chunk, self.n))
                if span in done or span in self.claimed or self.already_done(*span):
                    continue
                last = latest.get(span)
                if last is not None and claim_is_live(last.worker, last.at, self.me, self.lease_s, now):
                    continue
                _append(self.out_dir, CLAIM, self.cell, *span, self.me, now)
                self.claimed.append(span)
                return span
        return None

    def finish(self, span: tuple[int, int]) -> None:
        """Record that the rows of ``span`` are in the store (call after they were appended)."""
        with locked(self.out_dir):
            _append(self.out_dir, DONE, self.cell, *span, self.me, self.clock())

    def chunks(self, indices: Sequence[int]) -> Iterator[list[int]]:
        """Claimed chunks of ``indices`` (the cell's fixed subset) one after the other; each is recorded done
        when the next is asked for, i.e. once the caller has stored its rows."""
        while (span := self.claim()) is not None:
            yield list(indices[span[0]:span[1]])
            self.finish(span)


def cell_chunks(out_dir: Path, me: Worker, model: LoadedModel, plan: CellPlan, stored: pd.DataFrame,
                lease_s: float = DEFAULT_LEASE_S) -> Iterator[list[int]]:
    """The chunks of a zero-shot cell that this process claims, one at a time, from the store ``out_dir``
    (``--balance dynamic``); ``stored`` is the store's samples as the cell begins (chunks complete there
    are not claimed)."""
    from simclip_bench.tasks.zeroshot import missing_samples

    ids = [plan.source.sample_id(i) for i in plan.indices]
    lacking = set(missing_samples(stored, model, plan))
    claims = ChunkClaims(out_dir, cell_token([zeroshot_identity(model, plan), ids, plan.batch_size]),
                         len(plan.indices), plan.batch_size, me,
                         already_done=lambda start, stop: not lacking.intersection(ids[start:stop]), lease_s=lease_s)
    return claims.chunks(plan.indices)


def zeroshot_identity(model: LoadedModel, plan: CellPlan) -> list[list[tuple[str, str]]]:
    """What the store's sample key says about a cell's rows, sample id aside: for each setting (the audit's
    too), the key columns (``SAMPLE_KEY``) of a row built as the cell builds its rows. Whatever the key comes
    to hold (dataset identity, model identity, setting), two cells that share a claims token share it."""
    import torch

    from simclip_bench.results.schema import SAMPLE_KEY
    from simclip_bench.tasks.zeroshot_rows import sample_rows

    one, zero = torch.zeros(1, dtype=torch.long), torch.zeros(1)
    identity = []
    for setting, (spec, eps) in {**plan.settings(), **plan.audit_settings()}.items():
        row, = sample_rows("", model, plan.source, spec.name, setting, plan.norm, eps, [""], one, one, one, zero,
                     [""], zero)
        identity.append([(column, str(row.get(column))) for column in SAMPLE_KEY if column != "sample_id"])
    return sorted(identity)
