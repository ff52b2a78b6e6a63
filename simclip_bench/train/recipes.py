"""Default training recipes: what ``simclip train`` uses for options the user leaves out.

* ``builtin``: the tiny CLIP was pretrained from scratch at lr 1e-3, and fine-tunes at that rate;
  measured on the built-in data (docs/training.md, "Which objective is the default").
* ``builtin-tecoa``: the same with lr 1e-4 for TeCoA, whose cross-entropy at lr 1e-3 wrecks the tiny
  model (measured: 26.6 % clean, 12.6 % at 4/255, collapse warning at step 40; at 1e-4: 74.6 % clean,
  24.8 % at 4/255 against the base's 88.4 % / 11.2 %, APGD-CE 20 iterations, 500 images).
* ``robustvlm``: the FARE / TeCoA / Sim-CLIP recipe for pretrained open_clip encoders such as
  ViT-L-14 ``openai`` (Schlarmann et al. 2024): 20 000 steps x batch 128, AdamW lr 1e-5,
  weight decay 1e-4, 1 400 warm-up steps, cosine schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from simclip_bench.models.builtin import BUILTIN_MODELS


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int


BUILTIN = Recipe("builtin", steps=250, batch_size=64, lr=1e-3, weight_decay=1e-4, warmup_steps=25)
BUILTIN_TECOA = replace(BUILTIN, name="builtin-tecoa", lr=1e-4)
ROBUSTVLM = Recipe("robustvlm", steps=20000, batch_size=128, lr=1e-5, weight_decay=1e-4, warmup_steps=1400)


def recipe_for(model_spec: str, objective: str | None = None) -> Recipe:
    """The built-in recipe for built-in models (TeCoA at a tenth of the rate), the RobustVLM recipe otherwise."""
    if model_spec not in BUILTIN_MODELS:
        return ROBUSTVLM
    return BUILTIN_TECOA if objective == "tecoa" else BUILTIN
