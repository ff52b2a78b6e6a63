"""Append-only CSV result files, written atomically (read, append, write to a temp file, rename)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from simclip_bench.models.checkpoint import atomic_write_text
from simclip_bench.results.schema import RESULT_COLUMNS, SAMPLE_COLUMNS

RESULTS_FILE = "results.csv"
SAMPLES_FILE = "samples.csv"


def _append(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    new = pd.DataFrame(list(rows), columns=list(columns))
    if path.exists():
        old = pd.read_csv(path)
        missing = set(columns) - set(old.columns)
        if missing:
            raise ValueError(f"{path} has a different schema (missing {sorted(missing)}); write to a new --out")
        new = pd.concat([old[list(columns)], new], ignore_index=True)
    atomic_write_text(path, new.to_csv(index=False))


def append_results(out_dir: Path, rows: Sequence[dict], sample_rows: Sequence[dict]) -> tuple[Path, Path]:
    """Append aggregate rows to ``results.csv`` and per-sample rows to ``samples.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples_path, results_path = out_dir / SAMPLES_FILE, out_dir / RESULTS_FILE
    _append(samples_path, sample_rows, SAMPLE_COLUMNS)  # samples first: a table row never lacks its samples
    _append(results_path, rows, RESULT_COLUMNS)
    return results_path, samples_path


def read_results(out_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(out_dir) / RESULTS_FILE)
