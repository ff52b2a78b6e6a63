"""Training objectives, registered by name.

Each objective says what the inner attack maximises (an :class:`AttackObjective`) and what the
outer step minimises. Embeddings are the raw vision-tower outputs; cosines normalise them.

* ``simclip`` -- the Sim-CLIP paper (Hossain & Imteaj 2024): one shared encoder ``f`` sees the
  clean view ``x`` and the adversarial view ``x_adv``;
  ``L = 1/2 D(f(x_adv), sg f(x)) + 1/2 D(f(x), sg f(x_adv))`` with ``D(a, b) = -cos(a, b)``.
  The PGD view maximises ``D(f(x_adv), sg f(x))``.
* ``simclip-anchored`` -- the authors' released code: the stop-gradient target is a *frozen copy
  of the original encoder* on the clean image, ``L = -cos(f(x_adv), f_orig(x))`` (the symmetric
  form reduces to this because ``f_orig`` has no gradient); PGD maximises the same distance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.errors import UserError, did_you_mean


def neg_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``D(a, b) = -cos(a, b)`` per sample (B,)."""
    return -F.cosine_similarity(a.float(), b.float(), dim=-1)


def simclip_symmetric_loss(z_clean: torch.Tensor, z_adv: torch.Tensor) -> torch.Tensor:
    """The paper's symmetric stop-gradient loss (mean over the batch).

    The first half pulls ``z_adv`` towards a constant copy of ``z_clean``; the second pulls
    ``z_clean`` towards a constant copy of ``z_adv``. Gradients flow only on the non-stopped side.
    """
    return 0.5 * neg_cosine(z_adv, z_clean.detach()).mean() + 0.5 * neg_cosine(z_clean, z_adv.detach()).mean()


class CosineDistanceObjective:
    """Attack objective: push ``f(x_adv)`` away (in cosine) from a fixed target embedding.

    Loss per sample is ``-cos(f(x_adv), target)``; it never reports success, so the attack
    spends its whole budget (what training wants).
    """

    def __init__(self, encoder: nn.Module, target: torch.Tensor) -> None:
        self.encoder = encoder
        self.target = target.detach()

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = neg_cosine(self.encoder(x_adv), self.target[idx])
        return loss, torch.zeros_like(loss, dtype=torch.bool)


@dataclass
class StepReport:
    """What one outer step measured (for the metrics log)."""

    loss: float
    cos_adv_target: float


class TrainingObjective(Protocol):
    name: str
    needs_original: bool

    def attack_target(self, encoder: nn.Module, original: nn.Module | None, x: torch.Tensor) -> torch.Tensor: ...

    def loss(self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
             target: torch.Tensor) -> tuple[torch.Tensor, StepReport]: ...


class SimClipObjective:
    """Sim-CLIP as in the paper: symmetric stop-gradient cosine between the two views."""

    name = "simclip"
    needs_original = False

    def attack_target(self, encoder, original, x):
        with torch.no_grad():
            return encoder(x)

    def loss(self, encoder, x, x_adv, target):
        z = encoder(torch.cat([x, x_adv]))
        z_clean, z_adv = z.chunk(2)
        loss = simclip_symmetric_loss(z_clean, z_adv)
        cos = F.cosine_similarity(z_adv.detach().float(), target.float(), dim=-1).mean()
        return loss, StepReport(loss=float(loss.detach()), cos_adv_target=float(cos))


class SimClipAnchoredObjective:
    """Sim-CLIP as released: the target is the frozen original encoder on the clean image."""

    name = "simclip-anchored"
    needs_original = True

    def attack_target(self, encoder, original, x):
        with torch.no_grad():
            return original(x)

    def loss(self, encoder, x, x_adv, target):
        per_sample = neg_cosine(encoder(x_adv), target)
        loss = per_sample.mean()
        return loss, StepReport(loss=float(loss.detach()), cos_adv_target=float(-per_sample.detach().mean()))


OBJECTIVES: dict[str, type] = {o.name: o for o in (SimClipObjective, SimClipAnchoredObjective)}


def get_objective(name: str) -> TrainingObjective:
    """The objective registered as ``name``; unknown names raise UserError with a suggestion."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}{did_you_mean(name, OBJECTIVES)}; "
                        f"choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
