"""The result store: per-sample outcomes appended as they are computed, aggregates derived from them.

``samples.csv`` is the source of truth. Rows are appended a batch at a time under an exclusive
file lock, flushed and fsynced, so a killed run loses at most the batch it was computing, and two
processes writing to one store never interleave rows; a row whose key (``SAMPLE_KEY``) is already in
the file is not appended again, so two processes evaluating the same grid into one store leave each
row exactly once. A line cut short by a crash is dropped the next time the file is opened.
``results.csv`` holds the aggregate rows; it is read, merged and rewritten atomically (temp file +
fsync + rename) under the same lock, and a row replaces an earlier one with the same key, so
re-running a command never duplicates its table and concurrent writers never lose each other's rows.
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

from simclip_bench.models.checkpoint import atomic_write_text
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


@dataclass
class _Scanned:
    """What this process has read of one ``samples.csv``: its first ``offset`` bytes hold the rows ``keys``.

    ``identity`` is (device, inode): a file replaced or cut below ``offset`` is read again from the start.
    """

    identity: tuple[int, int]
    offset: int = 0
    keys: set[tuple[str, ...]] = field(default_factory=set)


_SCANNED: dict[Path, _Scanned] = {}  # per resolved samples.csv path, in this process


def _text(value: object) -> str:
    """A value as ``csv`` writes it (None is empty), for comparing keys with what the file holds."""
    return "" if value is None else str(_clean(value))


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
            size = _drop_partial_line(path)
            header = _header(path)
            missing = [c for c in columns if c not in header]
            if missing:
                raise ValueError(f"{path} was written by another version (no column {missing[0]!r}); "
                                 "write to a new --out")
            columns = header
            stored = _scanned(path.resolve(), header, key, size).keys
        fresh: dict[tuple[str, ...], dict] = {}
        for row in rows:
            row_key = tuple(_text(row.get(c)) for c in key)
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


def read_samples(out_dir: Path) -> pd.DataFrame:
    """Every complete per-sample row in the store (empty frame when there is none)."""
    path = Path(out_dir) / SAMPLES_FILE
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    data = path.read_bytes()
    data = data[:data.rfind(b"\n") + 1]
    return pd.read_csv(io.BytesIO(data), dtype={"sample_id": str, "eps_text": str, "fooled_by": str,
                                                "setting": str}, keep_default_na=False, na_values=[""])


def read_rows(out_dir: Path, filename: str) -> pd.DataFrame | None:
    """Every complete row of ``out_dir/filename`` as text (None when there is no such file or it is empty)."""
    path = Path(out_dir) / filename
    if not path.exists() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    data = data[:data.rfind(b"\n") + 1]
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
        if path.exists():
            old = pd.read_csv(path, dtype={"eps_text": str}, keep_default_na=False, na_values=[""])
            missing = [c for c in columns if c not in old.columns]
            if missing:
                raise ValueError(f"{path} was written by another version (no column {missing[0]!r}); "
                                 "write to a new --out")
            keys = {_key(r.get(k) for k in key) for r in rows}
            keep = [_key(t) not in keys for t in old[list(key)].itertuples(index=False)]
            new = pd.concat([old.loc[keep, list(columns)], new], ignore_index=True)
        atomic_write_text(path, new.to_csv(index=False))
    return path


def _key(values) -> tuple[str, ...]:
    """A row key as strings: missing and NaN are '', and 1.0 and 1 compare equal."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return tuple(out)


def append_results(out_dir: Path, rows: Sequence[dict], sample_rows: Sequence[dict]) -> tuple[Path, Path]:
    """Per-sample rows into ``samples.csv``, then aggregate rows into ``results.csv`` (samples first: a
    table row never lacks its samples)."""
    samples_path = append_samples(out_dir, sample_rows)
    return upsert_results(out_dir, rows), samples_path


def read_results(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(out_dir) / RESULTS_FILE, dtype={"eps_text": str}, keep_default_na=False, na_values=[""])
