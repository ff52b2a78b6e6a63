"""Training objectives, registered by name; each says what the inner attack maximises and the outer step minimises.

Embeddings ``z`` are the raw (projected, not normalised) vision-tower outputs; cosines normalise them.
``sg`` is stop-gradient, ``f`` the trainable encoder, ``f_orig`` a frozen copy of the encoder before
fine-tuning, ``D(a, b) = -cos(a, b)``.

* ``simclip`` -- Sim-CLIP as in the paper (Hossain & Imteaj 2024):
  ``L = 1/2 D(f(x_adv), sg f(x)) + 1/2 D(f(x), sg f(x_adv))``; PGD maximises ``D(f(x_adv), sg f(x))``.
  Options: ``anchor_weight`` λ adds ``λ·D(f(x_adv), f_orig(x))`` to the loss and to the attack's loss
  (a blend of the paper and the released code); ``predictor`` adds a SimSiam predictor head ``h``
  (Chen & He 2021; 2-layer MLP, bottleneck d/4, BN + ReLU) so that the loss becomes
  ``1/2 D(h(f(x_adv)), sg f(x)) + 1/2 D(h(f(x)), sg f(x_adv))``; the head is dropped at export.
* ``simclip-anchored`` -- Sim-CLIP as released: ``L = D(f(x_adv), f_orig(x))``. PGD maximises the squared
  l2 distance ``||f(x_adv) - f_orig(x)||²`` (the released script's ``--attack_loss l2``, on unnormalised
  embeddings as ``--output_normalize False`` gives them); ``attack_loss="cosine"`` maximises ``L`` instead.
* ``fare`` -- FARE (Schlarmann et al., ICML 2024): ``L = ||f(x_adv) - f_orig(x)||²`` (sum over the
  embedding dimensions, mean over the batch); PGD maximises the same squared distance.
* ``tecoa`` -- TeCoA (Mao et al., ICLR 2023): cross-entropy of ``100·norm(f(x_adv))·Tᵀ`` against the
  true class, ``T`` the unit text embeddings of "This is a photo of a {class name}" from the frozen
  text tower; PGD maximises the same cross-entropy. Needs labelled data.

What PGD maximises is the objective's ``attack_loss`` setting: ``l2`` (squared distance to ``f_orig(x)``),
``cosine`` (``D`` to the objective's target) or ``ce``. Each objective lists those it takes
(``attack_losses``), the first being its reference's choice and the default.

The trainer calls the trainable network once per micro-batch (one forward per backward, as DDP wants):
:meth:`loss_inputs` says on which images.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.errors import UserError, did_you_mean

TECOA_TEMPLATE = "This is a photo of a {}"
TECOA_LOGIT_SCALE = 100.0
ATTACK_LOSSES = ("l2", "cosine", "ce")


def neg_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``D(a, b) = -cos(a, b)`` per sample (B,)."""
    return -F.cosine_similarity(a.float(), b.float(), dim=-1)


def simclip_symmetric_loss(z_clean: torch.Tensor, z_adv: torch.Tensor, p_clean: torch.Tensor | None = None,
                           p_adv: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's symmetric stop-gradient loss (mean over the batch).

    The first half pulls the adversarial view towards a constant copy of ``z_clean``, the second the
    clean view towards a constant copy of ``z_adv``. With a predictor, ``p_*`` are the predicted
    embeddings (SimSiam); without, the views themselves are pulled.
    """
    p_clean = z_clean if p_clean is None else p_clean
    p_adv = z_adv if p_adv is None else p_adv
    return 0.5 * neg_cosine(p_adv, z_clean.detach()).mean() + 0.5 * neg_cosine(p_clean, z_adv.detach()).mean()


def fare_distance(z_adv: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """FARE's squared l2 distance per sample: sum over embedding dimensions (B,)."""
    return (z_adv.float() - anchor.float()).pow(2).sum(dim=-1)


def tecoa_logits(z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``100 · norm(z) · Tᵀ`` with ``T`` the unit class-text embeddings (C, D)."""
    return TECOA_LOGIT_SCALE * F.normalize(z.float(), dim=-1) @ text.float().T


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
class Views:
    """One micro-batch as an objective sees it: clean images, labels, and the constant references.

    ``target``: ``sg f(x)`` (the paper's target); ``anchor``: ``f_orig(x)``; both (B, D) or None.
    """

    x: torch.Tensor
    labels: torch.Tensor | None = None
    target: torch.Tensor | None = None
    anchor: torch.Tensor | None = None


class TrainingObjective(Protocol):
    name: str
    needs_original: bool
    needs_labels: bool
    attack_losses: tuple[str, ...]
    attack_loss_name: str

    def predictor(self, embed_dim: int) -> nn.Module | None:
        """A trainable head to train with the encoder and drop at export, or None."""

    def setup(self, encode_text: Callable[[Sequence[str]], torch.Tensor], classnames: Sequence[str] | None) -> None:
        """Once before training: e.g. TeCoA's class-text embeddings."""

    def views(self, encoder: nn.Module, original: nn.Module | None, x: torch.Tensor,
              labels: torch.Tensor | None) -> Views:
        """The constant references for this micro-batch (computed without gradient)."""

    def attack_loss(self, z_adv: torch.Tensor, views: Views, idx: torch.Tensor) -> torch.Tensor:
        """Per-sample loss the inner PGD maximises, given ``f(x_adv)`` of samples ``idx``."""

    def loss_inputs(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Images for the single trainable forward pass of the outer step."""

    def loss(self, z: torch.Tensor, p: torch.Tensor | None, views: Views) -> tuple[torch.Tensor, dict[str, float]]:
        """Outer loss (scalar) and what to log, from the embeddings ``z`` of :meth:`loss_inputs` (and
        the predictor's outputs ``p``)."""


class _Base:
    needs_original = False
    needs_labels = False
    attack_losses: tuple[str, ...] = ()  # what the inner PGD may maximise; the first is the default
    # What the inner PGD maximised before the attack loss was a setting (runs saved without one).
    former_attack_loss: str | None = None

    def __init__(self, attack_loss: str | None = None) -> None:
        self.attack_loss_name = attack_loss or self.attack_losses[0]

    def predictor(self, embed_dim: int) -> nn.Module | None:
        return None

    def setup(self, encode_text, classnames) -> None:
        pass

    def loss_inputs(self, x, x_adv):
        return x_adv


def simsiam_predictor(embed_dim: int) -> nn.Module:
    """SimSiam's predictor (Chen & He 2021): Linear, BN, ReLU, Linear with a d/4 bottleneck."""
    hidden = max(embed_dim // 4, 8)
    return nn.Sequential(nn.Linear(embed_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, embed_dim))


class SimClipObjective(_Base):
    """Sim-CLIP as in the paper: symmetric stop-gradient cosine between the two views (options: anchor, predictor)."""

    name = "simclip"
    attack_losses = ("cosine",)

    def __init__(self, anchor_weight: float = 0.0, predictor: bool = False, attack_loss: str | None = None) -> None:
        super().__init__(attack_loss)
        self.anchor_weight = float(anchor_weight)
        self.use_predictor = predictor
        self.needs_original = self.anchor_weight > 0

    def predictor(self, embed_dim):
        return simsiam_predictor(embed_dim) if self.use_predictor else None

    def views(self, encoder, original, x, labels):
        with torch.no_grad():
            anchor = original(x) if self.anchor_weight > 0 else None
            return Views(x, labels, target=encoder(x), anchor=anchor)

    def attack_loss(self, z_adv, views, idx):
        loss = neg_cosine(z_adv, views.target[idx])
        if self.anchor_weight > 0:
            loss = loss + self.anchor_weight * neg_cosine(z_adv, views.anchor[idx])
        return loss

    def loss_inputs(self, x, x_adv):
        return torch.cat([x, x_adv])

    def loss(self, z, p, views):
        z_clean, z_adv = z.chunk(2)
        p_clean, p_adv = p.chunk(2) if p is not None else (None, None)
        loss = simclip_symmetric_loss(z_clean, z_adv, p_clean, p_adv)
        report = {"cos_adv_clean": float(-neg_cosine(z_adv.detach(), z_clean.detach()).mean())}
        if self.anchor_weight > 0:
            anchor_term = neg_cosine(z_adv, views.anchor).mean()
            loss = loss + self.anchor_weight * anchor_term
            report["cos_adv_anchor"] = float(-anchor_term.detach())
        return loss, {"loss": float(loss.detach()), **report}


class _AnchoredObjective(_Base):
    """An objective whose reference is the frozen original encoder on the clean image, ``f_orig(x)``.

    The inner PGD maximises the squared l2 distance to it (``l2``, default) or ``-cos`` (``cosine``).
    """

    needs_original = True
    attack_losses = ("l2", "cosine")

    def views(self, encoder, original, x, labels):
        with torch.no_grad():
            return Views(x, labels, anchor=original(x))

    def attack_loss(self, z_adv, views, idx):
        distance = fare_distance if self.attack_loss_name == "l2" else neg_cosine
        return distance(z_adv, views.anchor[idx])


class SimClipAnchoredObjective(_AnchoredObjective):
    """Sim-CLIP as released: the target is the frozen original encoder on the clean image.

    The outer loss is ``-cos``; the inner PGD maximises the squared l2 distance by default, as the released
    script does (``--attack_loss l2``). simclip-bench attacked with ``-cos`` before that was a setting.
    """

    name = "simclip-anchored"
    former_attack_loss = "cosine"

    def loss(self, z, p, views):
        per_sample = neg_cosine(z, views.anchor)
        loss = per_sample.mean()
        return loss, {"loss": float(loss.detach()), "cos_adv_anchor": float(-per_sample.detach().mean())}


class FareObjective(_AnchoredObjective):
    """FARE: squared l2 distance of ``f(x_adv)`` to the frozen original embedding of the clean image."""

    name = "fare"

    def loss(self, z, p, views):
        loss = fare_distance(z, views.anchor).mean()
        cos = float(-neg_cosine(z.detach(), views.anchor).mean())
        return loss, {"loss": float(loss.detach()), "cos_adv_anchor": cos}


class TecoaObjective(_Base):
    """TeCoA: supervised adversarial training of the zero-shot classifier built from class-name texts."""

    name = "tecoa"
    needs_labels = True
    attack_losses = ("ce",)

    def __init__(self, attack_loss: str | None = None) -> None:
        super().__init__(attack_loss)
        self.text: torch.Tensor | None = None

    def setup(self, encode_text, classnames):
        if not classnames:
            raise UserError("--objective tecoa needs class names: use labelled data (the built-in shapes, an "
                            "ImageFolder directory, or a list file with a label column)")
        with torch.no_grad():
            self.text = F.normalize(encode_text([TECOA_TEMPLATE.format(c) for c in classnames]).float(), dim=-1)

    def views(self, encoder, original, x, labels):
        if labels is None or bool((labels < 0).any()):
            raise UserError("--objective tecoa needs a label for every training image")
        return Views(x, labels)

    def attack_loss(self, z_adv, views, idx):
        return F.cross_entropy(tecoa_logits(z_adv, self.text.to(z_adv.device)), views.labels[idx], reduction="none")

    def loss(self, z, p, views):
        logits = tecoa_logits(z, self.text.to(z.device))
        loss = F.cross_entropy(logits, views.labels)
        acc = float((logits.detach().argmax(-1) == views.labels).float().mean())
        return loss, {"loss": float(loss.detach()), "adv_accuracy": acc}


OBJECTIVES: dict[str, type] = {o.name: o for o in (SimClipObjective, SimClipAnchoredObjective, FareObjective,
                                                   TecoaObjective)}


def default_attack_loss(name: str) -> str:
    """What the inner PGD of objective ``name`` maximises by default: its reference's choice."""
    return OBJECTIVES[name].attack_losses[0]


def former_attack_loss(name: str) -> str:
    """What it maximised in runs saved before the attack loss was a setting (their config lacks it)."""
    return OBJECTIVES[name].former_attack_loss or default_attack_loss(name)


def check_attack_loss(name: str, attack_loss: str | None) -> None:
    """UserError unless objective ``name`` (registered) can attack with ``attack_loss`` (None: its default)."""
    if attack_loss is None:
        return
    if attack_loss not in ATTACK_LOSSES:
        raise UserError(f"unknown --attack-loss {attack_loss!r}{did_you_mean(attack_loss, ATTACK_LOSSES)}; "
                        f"choose one of {', '.join(ATTACK_LOSSES)}")
    allowed = OBJECTIVES[name].attack_losses
    if attack_loss not in allowed:
        raise UserError(f"--attack-loss {attack_loss} does not go with --objective {name}; "
                        f"it attacks with {' or '.join(allowed)}")


def get_objective(name: str, anchor_weight: float = 0.0, predictor: bool = False,
                  attack_loss: str | None = None) -> TrainingObjective:
    """The objective registered as ``name``; unknown names and options it does not take raise UserError.

    ``attack_loss``: what the inner PGD maximises (see the module docstring); None is the objective's default.
    """
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}{did_you_mean(name, OBJECTIVES)}; "
                        f"choose one of {', '.join(OBJECTIVES)}")
    check_attack_loss(name, attack_loss)
    if not (anchor_weight >= 0 and anchor_weight < float("inf")):
        raise UserError(f"--anchor-weight must be a finite number >= 0, got {anchor_weight}")
    if name != SimClipObjective.name and (anchor_weight or predictor):
        option = "--anchor-weight" if anchor_weight else "--predictor"
        raise UserError(f"{option} applies to --objective simclip only (got --objective {name})")
    if name == SimClipObjective.name:
        return SimClipObjective(anchor_weight=anchor_weight, predictor=predictor, attack_loss=attack_loss)
    return OBJECTIVES[name](attack_loss=attack_loss)
