"""Training checkpoints: everything needed to continue a run exactly as if it had never stopped.

``RUN_DIR/checkpoint.pt`` holds the step, the vision tower and predictor weights, the AdamW state, the
schedule position (the step: the schedule is a pure function of it), the RNG states, the data position,
the collapse watch and the counters. It is written through a temporary file, fsync and rename, so a kill
at any moment leaves the previous checkpoint intact. Read with ``torch.load(weights_only=True)``: plain
tensors and numbers, nothing unpickled.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import atomic_writer
from simclip_bench.runs import CHECKPOINT_FILENAME

CHECKPOINT_FORMAT = "simclip-bench.train-checkpoint.v1"


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(state: dict, run_dir: Path) -> Path:
    """Write ``state`` (plus the format tag) atomically to ``run_dir/checkpoint.pt``."""
    path = Path(run_dir) / CHECKPOINT_FILENAME
    with atomic_writer(path) as f:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
    return path


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that a process killed in the middle of an atomic write
    leaves in ``run_dir``; call only while no process writes there. Returns what was removed."""
    stale = sorted(Path(run_dir).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(run_dir: Path, map_location: torch.device | str = "cpu") -> dict:
    path = Path(run_dir) / CHECKPOINT_FILENAME
    if not path.is_file():
        raise UserError(f"--resume: {run_dir} has no {CHECKPOINT_FILENAME}; it is not a run started by "
                        "'simclip train' (or it stopped before its first checkpoint)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)  # we wrote it: tensors only, always
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        lines = str(e).splitlines()
        raise UserError(f"--resume: {path} is damaged or not a {CHECKPOINT_FORMAT} checkpoint "
                        f"({lines[0][:120] if lines else type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"--resume: {path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return state
