"""The run directories of ``simclip train``: where they are, what they hold, how to find the latest.

A run directory holds ``config.json`` (:data:`RUN_CONFIG`: the resolved training config with its
provenance), ``metrics.jsonl`` (:data:`METRICS_FILE`: one record per logged step, then a summary),
``checkpoint.pt`` (:data:`CHECKPOINT_FILENAME`, written by :mod:`simclip_bench.train.checkpointing`) and,
once finished, the encoder (``encoder.safetensors``, :data:`~simclip_bench.models.checkpoint.ENCODER_FILENAME`).

Training writes them; evaluation, ``simclip bench``, ``simclip ls``, the model cards and resume find and
read them through this module, so none of them needs the trainer.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from simclip_bench.errors import UserError, first_line
from simclip_bench.models.checkpoint import ENCODER_FILENAME

DEFAULT_RUNS_DIR = Path("runs")
RUN_CONFIG = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILENAME = "checkpoint.pt"


def latest_run(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently finished run directory under ``runs_dir`` (one holding an encoder), or None."""
    runs = [p.parent for p in Path(runs_dir).glob(f"*/{ENCODER_FILENAME}")]
    return max(runs, key=lambda p: (p / ENCODER_FILENAME).stat().st_mtime) if runs else None


def new_run_dir(out: str | None, objective: str) -> Path:
    """Where a new run goes: ``out`` when it holds no run yet, else ``runs/<time>-<objective>``."""
    if out:
        path = Path(out)
        if (path / ENCODER_FILENAME).exists():
            raise UserError(f"{path} already holds a finished run; choose another --out")
        if (path / CHECKPOINT_FILENAME).exists():
            raise UserError(f"{path} holds an unfinished run; continue it with --resume {path} or choose another --out")
        return path
    return DEFAULT_RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{objective}"


def run_config(run_dir: Path) -> dict:
    """The resolved config saved by ``simclip train`` in ``run_dir``; a missing or damaged file is a UserError."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} has no {RUN_CONFIG}; pass the run directory that 'simclip train' wrote")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {first_line(e)}); "
                        "it is the run's saved settings, so re-create the run") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is damaged (a JSON {type(saved).__name__}, not an object); re-create the run")
    return saved
