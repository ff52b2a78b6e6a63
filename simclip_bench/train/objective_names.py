"""The training objectives by name, each with a one-line summary, and the default: what ``simclip ls objectives``
lists, readable without torch. :mod:`simclip_bench.train.objectives` implements one class per name here
(``tests/test_cli_ls.py`` checks that the two agree)."""
from __future__ import annotations

OBJECTIVE_SUMMARIES: dict[str, str] = {
    "simclip": "Sim-CLIP as in the paper: symmetric stop-gradient cosine between the two views (options: anchor, "
               "predictor).",
    "simclip-anchored": "Sim-CLIP as released: the target is the frozen original encoder on the clean image.",
    "fare": "FARE: squared l2 distance of f(x_adv) to the frozen original embedding of the clean image.",
    "tecoa": "TeCoA: supervised adversarial training of the zero-shot classifier built from class-name texts.",
}
# What 'simclip train' fine-tunes with unless told (docs/training.md, "Which objective is the default, and why"), and
# what a saved run that names no objective was trained with.
DEFAULT_OBJECTIVE = "simclip-anchored"
