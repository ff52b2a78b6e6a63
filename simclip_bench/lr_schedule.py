"""Learning-rate schedule: linear warm-up then cosine decay to zero (as in open_clip and RobustVLM).

Shared by the encoder's fine-tuning (:mod:`simclip_bench.train`) and the tiny VLM's training
(:mod:`simclip_bench.vlm.tiny_train`), so it sits below both, with the package's other shared modules."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate at ``step`` (0-based): ``base_lr * (step+1)/warmup`` during warm-up, then cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))
