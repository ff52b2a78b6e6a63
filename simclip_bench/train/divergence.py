"""Divergence stop: a NaN or Inf loss or gradient ends the run before it can reach the weights.

Before every optimizer step the trainer checks the micro-batch losses and every gradient (one host
sync per step; under DDP one tiny all-reduce, so that all processes agree and none is left waiting).
On a non-finite value the step is not applied and nothing more is saved: the last periodic
``checkpoint.pt`` stays as it was and no ``encoder.safetensors`` is written. :class:`TrainingDiverged`
says the step, what was non-finite, and where the last good checkpoint is.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from simclip_bench.errors import UserError
from simclip_bench.train.checkpointing import CHECKPOINT_FILENAME


class TrainingDiverged(UserError):
    """The loss or the gradients of one step were NaN or Inf; the step was not applied.

    ``step`` counts optimizer steps from 1; ``what`` is ``"loss"`` or ``"gradients"``; ``value`` the
    offending loss or the total l2 gradient norm (None: a loss seen by another DDP process). Once the
    run adds its ``run_dir`` (:meth:`at`), the message also names the last good checkpoint and its
    ``checkpoint_step`` (None: none written yet) and says what to do.
    """

    def __init__(self, step: int, what: str, value: float | None, run_dir: Path | None = None,
                 checkpoint_step: int | None = None) -> None:
        self.step, self.what, self.value = step, what, value
        self.run_dir, self.checkpoint_step = run_dir, checkpoint_step
        super().__init__(self._message())

    def at(self, run_dir: Path, checkpoint_step: int | None) -> TrainingDiverged:
        """The same divergence in ``run_dir``, whose last checkpoint holds ``checkpoint_step`` (None: none)."""
        return TrainingDiverged(self.step, self.what, self.value, Path(run_dir), checkpoint_step)

    def _message(self) -> str:
        what = "the loss" if self.what == "loss" else "the total gradient norm"
        seen = "non-finite on another process" if self.value is None else str(self.value)
        text = f"training diverged at step {self.step}: {what} is {seen}; the step was not applied"
        if self.run_dir is None:
            return text
        if self.checkpoint_step is None:
            return f"{text} and no checkpoint was written yet. Lower --lr or --eps and start again"
        return (f"{text}; last good checkpoint: {self.run_dir / CHECKPOINT_FILENAME} (step {self.checkpoint_step}). "
                f"Lower --lr or --eps in a new run, or retry from step {self.checkpoint_step} with the saved "
                f"settings: simclip train --resume {self.run_dir}")


def check_finite(step: int, losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                 distributed: bool = False) -> None:
    """Raise :class:`TrainingDiverged` unless every loss and every gradient of ``params`` is finite.

    ``step`` counts from 1; ``losses`` are the step's micro-batch losses (scalars). A finite loss can
    still give Inf gradients (an overflow in the backward pass), so both are checked, element by
    element (a norm would overflow on huge but finite gradients). One host sync; with ``distributed``
    one all-reduce first, so that a NaN on any process stops them all at the same step.
    """
    grads = [p.grad.detach() for p in params if p.grad is not None]
    loss_ok = torch.stack([loss.detach().reshape(()).isfinite() for loss in losses]).all()
    grads_ok = torch.stack([g.isfinite().all() for g in grads]).all() if grads else torch.ones((), dtype=torch.bool)
    flags = torch.stack([~loss_ok, ~grads_ok.to(loss_ok.device)]).int()
    if distributed:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    loss_nonfinite, grads_nonfinite = flags.tolist()
    if loss_nonfinite:
        mine = [v for v in (float(loss) for loss in losses) if not math.isfinite(v)]
        raise TrainingDiverged(step, "loss", mine[0] if mine else None)
    if grads_nonfinite:
        raise TrainingDiverged(step, "gradients", float(total_norm(grads)))


def total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The l2 norm of all ``tensors`` seen as one vector, in fp32 on their device (NaN if any element is
    NaN, else Inf if any is Inf or the sum of squares overflows)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))
