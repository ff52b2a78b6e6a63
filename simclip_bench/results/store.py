"""The result store: per-sample outcomes appended as they are computed, aggregates derived from them.

``samples.csv`` is the source of truth. Rows are appended a batch at a time under an exclusive
file lock, flushed and fsynced, so a killed run loses at most the batch it was computing, and two
processes writing to one store never interleave rows. A line cut short by a crash is dropped the
next time the file is opened. ``results.csv`` holds the aggregate rows; it is rewritten atomically
(temp file + fsync + rename) and a row replaces an earlier one with the same key, so re-running a
command never duplicates its table.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from simclip_bench.models.checkpoint import atomic_write_text
from simclip_bench.results.schema import RESULT_COLUMNS, RESULT_KEY, SAMPLE_COLUMNS

RESULTS_FILE = "results.csv"
SAMPLES_FILE = "samples.csv"
LOCK_FILE = ".store.lock"


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


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left without its newline by a crash."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def append_samples(out_dir: Path, rows: Sequence[dict], columns: Sequence[str] = SAMPLE_COLUMNS) -> Path:
    """Append per-sample rows to ``out_dir/samples.csv`` durably; returns the path."""
    out_dir = Path(out_dir)
    path = out_dir / SAMPLES_FILE
    with locked(out_dir):
        new_file = not path.exists() or path.stat().st_size == 0
        if not new_file:
            _drop_partial_line(path)
            header = _header(path)
            missing = [c for c in columns if c not in header]
            if missing:
                raise ValueError(f"{path} was written by another version (no column {missing[0]!r}); "
                                 "write to a new --out")
            columns = header
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        if new_file:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _clean(v) for k, v in row.items()})
        with open(path, "a", encoding="utf-8", newline="") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
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
