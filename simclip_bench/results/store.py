"""The result store: per-sample outcomes appended as they are computed, aggregates derived from them.

``samples.csv`` is the source of truth. Rows are appended a batch at a time under an exclusive
file lock, flushed and fsynced, so a killed run loses at most the batch it was computing, and two
processes writing to one store never interleave rows; a row whose key (``SAMPLE_KEY``) is already in
the file is not appended again, so two processes evaluating the same grid into one store leave each
row exactly once. A line cut short by a crash is dropped the next time the file is opened.
``results.csv`` holds the aggregate rows; it is read, merged and rewritten atomically (temp file +
fsync + rename) under the same lock, and a row replaces an earlier one with the same key, so
re-running a command never duplicates its table and concurrent writers never lose each other's rows.

Keys are measurement identities (:mod:`simclip_bench.results.identity`) and every read takes the text
columns as text. A store written before identities existed (no ``data_id`` column), or a file whose header
line was cut, is refused with one line before any work (:func:`check_store`), never appended to.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import atomic_write_text
from simclip_bench.results.identity import IDENTITY_COLUMNS, TEXT_COLUMNS, key_of
from simclip_bench.results.schema import RESULT_COLUMNS, RESULT_KEY, SAMPLE_COLUMNS, SAMPLE_KEY

RESULTS_FILE = "results.csv"
SAMPLES_FILE = "samples.csv"
VLM_SAMPLES_FILE = "vlm_samples.csv"  # captioning / VQA per-sample texts (simclip_bench.jobs.vlm_eval)
LOCK_FILE = ".store.lock"
_BLOCK = 1 << 16  # bytes read at a time when looking backwards for the last complete line


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold the store's exclusive lock (blocks until other writers are done)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clean(value: object) -> object:
    # One row per line: texts (e.g. generated captions) must not carry line breaks.
    return " ".join(value.splitlines()) if isinstance(value, str) else value


def _drop_partial_line(path: Path) -> int:
    """Cut a last line left without its newline by a crash; returns the file's size (bytes) after.

    Reads backwards from the end, so a long file costs one small read when its last line is complete.
    """
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 1, 0))
        if size == 0 or f.read(1) == b"\n":
            return size
        end = size
        keep = 0
        while end > 0:
            start = max(end - _BLOCK, 0)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return keep


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _header_problem(path: Path, columns: Sequence[str]) -> str | None:
    """Why rows of ``columns`` cannot be appended to the store file ``path``, or None when they can."""
    with open(path, "rb") as f:
        first = f.readline()
    if not first.endswith(b"\n"):
        return "its header line was cut short (a crash while it was created)"
    header = _header(path)
    if "model" not in header or "setting" not in header:
        return "it is not a simclip-bench store file (no column 'model' or 'setting')"
    old = [c for c in IDENTITY_COLUMNS if c not in header]
    if old:
        return (f"it was written by an earlier simclip-bench, before measurement identities (no column {old[0]!r}), "
                "so its rows cannot be matched to the data they came from")
    missing = [c for c in columns if c not in header]
    if missing:
        return f"it was written by another version of simclip-bench (no column {missing[0]!r})"
    return None


def check_store(out_dir: Path, files: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Refuse, with one line, a store whose files (name, columns) cannot be written by this version."""
    for filename, columns in files:
        path = Path(out_dir) / filename
        if not path.is_file() or path.stat().st_size == 0:
            continue
        problem = _header_problem(path, columns)
        if problem:
            raise UserError(f"{path}: {problem}; write to a new --out (or move the file away: "
                            f"'simclip leaderboard {out_dir}' still renders what is there)")


@dataclass
class _Scanned:
    """What this process has read of one ``samples.csv``: its first ``offset`` bytes hold the rows ``keys``.

    ``identity`` is (device, inode): a file replaced or cut below ``offset`` is read again from the start.
    """

    identity: tuple[int, int]
    offset: int = 0
    keys: set[tuple[str, ...]] = field(default_factory=set)


_SCANNED: dict[Path, _Scanned] = {}  # per resolved samples.csv path, in this process


def _scanned(path: Path, header: list[str], key: Sequence[str], size: int) -> _Scanned:
    """The keys of every row in ``path`` (the first ``size`` bytes): the cached ones plus those of the tail
    appended since this process last looked (by it or by others). Call under the store's lock."""
    stat = os.stat(path)
    seen = _SCANNED.get(path)
    if seen is None or seen.identity != (stat.st_dev, stat.st_ino) or not _line_ends_at(path, seen.offset, size):
        seen = _Scanned((stat.st_dev, stat.st_ino))
    if size > seen.offset:
        with open(path, "rb") as f:
            f.seek(seen.offset)
            rows = csv.reader(io.StringIO(f.read(size - seen.offset).decode("utf-8"), newline=""))
        if seen.offset == 0:
            next(rows, None)  # the header
        where = [header.index(c) for c in key]
        seen.keys.update(tuple(r[i] for i in where) for r in rows if len(r) == len(header))
        seen.offset = size
    _SCANNED[path] = seen
    return seen


def _line_ends_at(path: Path, offset: int, size: int) -> bool:
    """Whether ``offset`` (bytes) is still the end of a line of ``path`` (so the scan can go on from there)."""
    if offset == 0:
        return True
    if offset > size:
        return False
    with open(path, "rb") as f:
        f.seek(offset - 1)
        return f.read(1) == b"\n"


def append_samples(out_dir: Path, rows: Sequence[dict], columns: Sequence[str] = SAMPLE_COLUMNS,
                   key: Sequence[str] = SAMPLE_KEY, filename: str = SAMPLES_FILE) -> Path:
    """Append per-sample rows to ``out_dir/filename`` (``samples.csv``) durably, each ``key`` once; returns the path.

    Under the store's lock, a row whose key is already in the file (or earlier in ``rows``) is dropped,
    so two processes evaluating the same samples into one store write each row exactly once. Only the
    part of the file appended since this process last looked is parsed (see :class:`_Scanned`).
    """
    out_dir = Path(out_dir)
    path = out_dir / filename
    if not set(key) <= set(columns):
        raise ValueError(f"sample key {list(key)} is not among the columns {list(columns)}")
    with locked(out_dir):
        new_file = not path.exists() or path.stat().st_size == 0
        stored: set[tuple[str, ...]] = set()
        if not new_file:
            problem = _header_problem(path, columns)
            if problem:
                raise UserError(f"{path}: {problem}; write to a new --out")
            size = _drop_partial_line(path)
            header = _header(path)
            columns = header
            stored = _scanned(path.resolve(), header, key, size).keys
        fresh: dict[tuple[str, ...], dict] = {}
        for row in rows:
            row_key = key_of(row, key)
            if row_key not in stored:
                fresh.setdefault(row_key, row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        if new_file:
            writer.writeheader()
        for row in fresh.values():
            writer.writerow({k: _clean(v) for k, v in row.items()})
        with open(path, "ab") as f:
            f.write(buffer.getvalue().encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        # Only now that the rows are on disk does the cache count them.
        stat = path.stat()
        if new_file:  # nothing cached about an earlier file of this name can be right
            _SCANNED[path.resolve()] = _Scanned((stat.st_dev, stat.st_ino))
        seen = _SCANNED[path.resolve()]
        seen.keys.update(fresh)
        seen.offset = stat.st_size
    return path


def _complete_lines(path: Path) -> bytes:
    """The bytes of ``path`` up to its last complete line (a line cut by a crash is not a row)."""
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


def _text_types(data: bytes) -> dict[str, type]:
    """dtype of every text column in the CSV ``data`` (its header): keys and names stay strings."""
    header = next(csv.reader(io.StringIO(data[:data.find(b"\n") + 1].decode("utf-8"))), [])
    return {c: str for c in header if c in TEXT_COLUMNS or c in ("sample_id", "eps_text")}


def read_samples(out_dir: Path) -> pd.DataFrame:
    """Every complete per-sample row in the store (empty frame when there is none), text columns as text."""
    path = Path(out_dir) / SAMPLES_FILE
    data = _complete_lines(path) if path.exists() else b""
    if not data:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return pd.read_csv(io.BytesIO(data), dtype=_text_types(data), keep_default_na=False, na_values=[""])


def read_rows(out_dir: Path, filename: str) -> pd.DataFrame | None:
    """Every complete row of ``out_dir/filename`` as text (None when there is no such file or no complete row)."""
    path = Path(out_dir) / filename
    data = _complete_lines(path) if path.exists() else b""
    if not data:
        return None
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def check_merge_sources(sources: Sequence[Path], filename: str, out_dir: Path) -> None:
    """Each of ``sources`` must be a store folder holding ``filename`` (and not ``out_dir`` itself)."""
    from simclip_bench.errors import UserError

    for source in sources:
        source = Path(source)
        if not (source / filename).is_file():
            raise UserError(f"--merge-from {source}: no {filename} there; pass a --out folder of a shard")
        if source.resolve() == Path(out_dir).resolve():
            raise UserError(f"--merge-from {source} is --out itself; merge other stores into it")


def merge_samples(out_dir: Path, sources: Sequence[Path], filename: str, columns: Sequence[str],
                  key: Sequence[str]) -> int:
    """Copy the per-sample rows of ``sources/filename`` (other stores, e.g. one per shard where file locks
    cannot be trusted across machines) into ``out_dir/filename``, each key once; returns the rows read.
    Values are copied as text, exactly as the shard wrote them."""
    total = 0
    for source in sources:
        rows = read_rows(Path(source), filename)
        if rows is None:
            continue
        append_samples(out_dir, rows.to_dict("records"), columns, key, filename)
        total += len(rows)
    return total


def upsert_results(out_dir: Path, rows: Sequence[dict], columns: Sequence[str] = RESULT_COLUMNS,
                   key: Sequence[str] = RESULT_KEY) -> Path:
    """Write aggregate rows into ``results.csv``, replacing earlier rows with the same key."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_FILE
    with locked(out_dir):
        new = pd.DataFrame(list(rows), columns=list(columns))
        if path.exists() and path.stat().st_size:
            problem = _header_problem(path, columns)
            if problem:
                raise UserError(f"{path}: {problem}; write to a new --out")
            data = path.read_bytes()
            old = pd.read_csv(io.BytesIO(data), dtype=_text_types(data), keep_default_na=False, na_values=[""])
            keys = {key_of(r, key) for r in rows}
            keep = [key_of(r, key) not in keys for r in old[list(key)].to_dict("records")]
            new = pd.concat([old.loc[keep, list(columns)], new], ignore_index=True)
        atomic_write_text(path, new.to_csv(index=False))
    return path


def append_results(out_dir: Path, rows: Sequence[dict], sample_rows: Sequence[dict]) -> tuple[Path, Path]:
    """Per-sample rows into ``samples.csv``, then aggregate rows into ``results.csv`` (samples first: a
    table row never lacks its samples)."""
    samples_path = append_samples(out_dir, sample_rows)
    return upsert_results(out_dir, rows), samples_path


def read_results(out_dir: Path) -> pd.DataFrame:
    """``results.csv`` of the store, text columns as text."""
    data = (Path(out_dir) / RESULTS_FILE).read_bytes()
    return pd.read_csv(io.BytesIO(data), dtype=_text_types(data), keep_default_na=False, na_values=[""])
