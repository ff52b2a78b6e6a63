"""Attack objectives on a VLM's language-model loss, for the engine's attacks (APGD, PGD, ...).

* :class:`LanguageModelObjective`, untargeted (Schlarmann & Hein 2023; RobustVLM): maximise the LM loss
  of a ground-truth text (a reference caption or a human answer); targeted: minimise the LM loss of a
  target text. Its success flag is never raised, so APGD runs all its iterations and returns the point of
  best loss, as RobustVLM's ensemble does (the task's score judges the result afterwards).
* :class:`TargetStringObjective`: RobustVLM's targeted attack, whose success is "the target appears in
  the generated text". The search flags a sample when greedy decoding would begin with the target under
  teacher forcing (free, from the same forward pass, possibly in reduced precision); the sample stops
  only when :meth:`~TargetStringObjective.confirm` sees the target in a float32 generation.
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

    def _scores(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = idx.tolist()
        loss, match = self.vlm.target_scores(x_adv, [self.prompts[i] for i in rows], [self.texts[i] for i in rows])
        return (-loss if self.targeted else loss), match

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, match = self._scores(x_adv, idx)
        return loss, torch.zeros_like(match)


def contains_target(text: str, target: str) -> bool:
    """RobustVLM's success test of the targeted attack: the target, case-insensitively, anywhere in the text."""
    return target.strip().lower() in text.lower()


class TargetStringObjective(LanguageModelObjective):
    """Minimise the LM loss of a target text; success = the target appears in the generated text.

    ``max_new_tokens``: the generation length of the confirmation (default 20).
    """

    def __init__(self, vlm: VisionLanguageModel, prompts: Sequence[str], targets: Sequence[str],
                 max_new_tokens: int = 20) -> None:
        super().__init__(vlm, prompts, targets, targeted=True)
        self.max_new_tokens = max_new_tokens

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(x_adv, idx)

    @torch.no_grad()
    def confirm(self, x_adv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Whether a float32 greedy generation at ``x_adv`` contains the target."""
        rows = idx.tolist()
        with torch.autocast(x_adv.device.type, enabled=False):
            texts = self.vlm.generate(x_adv, [self.prompts[i] for i in rows], max_new_tokens=self.max_new_tokens)
        return torch.tensor([contains_target(t, self.texts[i]) for t, i in zip(texts, rows, strict=True)],
                            dtype=torch.bool, device=x_adv.device)
