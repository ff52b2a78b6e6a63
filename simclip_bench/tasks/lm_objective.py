"""Attack objectives on a VLM's language-model loss, for the engine's attacks (APGD, PGD, ...).

* untargeted (Schlarmann & Hein 2023; RobustVLM): maximise the LM loss of a ground-truth text (a
  reference caption or a human answer); the success flag is never raised, so APGD runs all its
  iterations, as in RobustVLM (success is judged afterwards by the task's score);
* targeted: minimise the LM loss of a target text (maximise its negative); success is raised as soon as
  greedy decoding would begin with the target (free, from the same forward pass), which stops the sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from simclip_bench.vlm.base import VisionLanguageModel


class LanguageModelObjective:
    """``objective(x_adv, idx)`` over N samples: sample i is (prompts[i], texts[i]).

    Args:
        vlm: the model under attack (its vision encoder sees ``x_adv`` in [0,1]).
        prompts: the prompt of each of the N samples (the model's own format).
        texts: the ground-truth text (untargeted) or the target text (targeted) of each sample.
        targeted: minimise the loss of ``texts`` instead of maximising it (default False).
    """

    def __init__(self, vlm: VisionLanguageModel, prompts: Sequence[str], texts: Sequence[str],
                 targeted: bool = False) -> None:
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
        self.vlm, self.prompts, self.texts, self.targeted = vlm, list(prompts), list(texts), targeted

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = idx.tolist()
        loss, match = self.vlm.target_scores(x_adv, [self.prompts[i] for i in rows], [self.texts[i] for i in rows])
        if self.targeted:
            return -loss, match
        return loss, torch.zeros_like(match)
