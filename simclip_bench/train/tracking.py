"""Optional experiment tracking for ``simclip train --log``: TensorBoard or Weights & Biases.

Off by default and never required: the packages are imported only when asked for, and a missing
one is a one-line error naming the pip command. Each tracker receives the numbers of every
metrics record the trainer logs (the same ones as ``metrics.jsonl``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from simclip_bench.errors import UserError, did_you_mean

TRACKERS = ("none", "tensorboard", "wandb")


class Tracker(Protocol):
    def log(self, step: int, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


class TensorBoardTracker:
    """Scalars under ``train/<name>`` in ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, record: dict[str, Any]) -> None:
        for name, value in _numbers(record).items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run (project ``simclip-bench`` unless WANDB_PROJECT is set) with the resolved config."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("--log wandb needs the wandb package: pip install wandb") from None
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "simclip-bench"), dir=str(run_dir),
                              config=config, name=Path(run_dir).name)

    def log(self, step: int, record: dict[str, Any]) -> None:
        self.run.log(_numbers(record), step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str, run_dir: Path, config: dict[str, Any]) -> Tracker | None:
    """The tracker called ``kind`` writing for ``run_dir``, or None for ``none``."""
    if kind not in TRACKERS:
        raise UserError(f"--log {kind!r}{did_you_mean(kind, TRACKERS)}: choose one of {', '.join(TRACKERS)}")
    if kind == "none":
        return None
    return TensorBoardTracker(run_dir) if kind == "tensorboard" else WandbTracker(run_dir, config)
