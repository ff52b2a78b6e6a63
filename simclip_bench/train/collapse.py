"""Collapse watch: a Siamese loss without negatives can map every image to one point.

Two gauges, logged to ``metrics.jsonl``:

* ``embedding_std_sqrt_d``: per-dimension std of the L2-normalised embeddings times sqrt(d), averaged
  over dimensions (about 1 when the embeddings spread over the sphere, towards 0 as they collapse);
* ``probe_zero_shot``: zero-shot accuracy on held-out labelled images (when the data has them).

Relative to their values at the start: a gauge below ``warn`` of its way from the start to collapse
(spread ratio ``warn_ratio``, default 0.5; probe halfway to chance) prints a warning once; below
``stop_ratio`` (default 0.2; probe within 10 % of the way to chance) the run stops with a clear message.
``stop_ratio`` 0 never stops.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from simclip_bench.errors import UserError

PROBE_WARN_FRACTION = 0.5
PROBE_STOP_FRACTION = 0.1


class TrainingCollapsed(UserError):
    """The embeddings collapsed; the message says what was seen and what to try."""


def embedding_spread(z: torch.Tensor) -> float:
    """Per-dimension std of the L2-normalised embeddings times sqrt(d), averaged over dimensions.

    About 1 for embeddings spread over the sphere; it falls towards 0 as they collapse to a point.
    """
    zn = F.normalize(z.detach().float(), dim=-1)
    return float(zn.std(dim=0).mean() * math.sqrt(zn.shape[-1]))


@dataclass
class CollapseWatch:
    warn_ratio: float = 0.5
    stop_ratio: float = 0.2
    chance: float | None = None
    initial_spread: float | None = None
    initial_probe: float | None = None
    warned: bool = False
    warned_at_step: int | None = None  # the step of the warning (the run's summary line and model card show it)

    def _probe_fraction_left(self, probe: float) -> float | None:
        if probe is None or self.initial_probe is None or self.chance is None:
            return None
        span = self.initial_probe - self.chance
        return (probe - self.chance) / span if span > 0 else None

    def check(self, step: int, spread: float | None, probe: float | None, log) -> None:
        """Record the first values, warn once, raise :class:`TrainingCollapsed` when collapse sets in."""
        if spread is not None and self.initial_spread is None:
            self.initial_spread = spread
        if probe is not None and self.initial_probe is None:
            self.initial_probe = probe
        ratio = spread / self.initial_spread if spread is not None and self.initial_spread else None
        left = self._probe_fraction_left(probe)
        detail = []
        if ratio is not None:
            detail.append(f"embedding spread std×√d {spread:.3f} (started at {self.initial_spread:.3f})")
        if left is not None:
            detail.append(f"held-out zero-shot accuracy {probe:.1%} (started at {self.initial_probe:.1%}, "
                          f"chance {self.chance:.1%})")
        stop = self.stop_ratio > 0 and ((ratio is not None and ratio < self.stop_ratio)
                                        or (left is not None and left < PROBE_STOP_FRACTION))
        if stop:
            raise TrainingCollapsed(
                f"training stopped at step {step}: the embeddings collapsed ({'; '.join(detail)}). Lower --lr, "
                "use --objective simclip-anchored or fare, add --anchor-weight, or pass --collapse-stop 0 to go on")
        warn = (ratio is not None and ratio < self.warn_ratio) or (left is not None and left < PROBE_WARN_FRACTION)
        if warn and not self.warned:
            self.warned, self.warned_at_step = True, step
            log(f"warning: collapse setting in at step {step}: {'; '.join(detail)}")

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
