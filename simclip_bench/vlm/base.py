"""The VLM interface every task and attack talks to.

A VLM here is a vision encoder (swappable, images in [0,1] pixel space, normalisation inside) plus a
language model that reads the encoder's features. Tasks and attacks need exactly two things from it:

* ``generate(images, prompts)``: greedy text for each (image, prompt);
* ``loss(images, prompts, targets)``: the language-model loss of each target text given (image, prompt),
  per sample, differentiable with respect to the images (what APGD maximises or, targeted, minimises).
  ``target_scores`` returns the same loss plus, from the same forward pass, whether greedy decoding
  would begin with the target (every target token is the arg-max under teacher forcing): a free,
  exact success test for targeted attacks.

Prompts are the model's own instruction format: ``caption_prompt()`` and ``vqa_prompt(question)`` give
the wording the model was trained or instructed with, so tasks stay model-agnostic.

:class:`LoadedVLM` is what every loader returns (:mod:`.load` for the tiny VLM, :mod:`.llava` for LLaVA):
the VLM with its encoder swapped in, and how result tables name it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

NATIVE_ENCODER = "native"  # --model native: keep the VLM's own vision tower


class VisionLanguageModel(ABC):
    """A VLM with a swappable vision encoder; images are (B, 3, H, W) in [0,1] at ``image_size``."""

    name: str
    image_size: int

    @abstractmethod
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20) -> list[str]:
        """Greedy decoding: one text per (image, prompt), without the prompt."""

    @abstractmethod
    def target_scores(self, images: torch.Tensor, prompts: Sequence[str],
                      targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, greedy_match), both (B,): the mean token cross-entropy of ``targets`` after (image, prompt)
        in nats (float32, differentiable), and whether greedy decoding starts with the target."""

    def loss(self, images: torch.Tensor, prompts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        """Per-sample mean token cross-entropy (B,) of ``targets`` after (image, prompt), in nats."""
        return self.target_scores(images, prompts, targets)[0]

    @abstractmethod
    def caption_prompt(self) -> str:
        """The prompt that asks this model for a short caption."""

    @abstractmethod
    def vqa_prompt(self, question: str) -> str:
        """The prompt that asks this model a question, expecting a short answer."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def postprocess_answer(self, text: str) -> str:
        """The answer part of a generated VQA text (default: the first line, stripped)."""
        return text.strip().split("\n")[0].strip()


@dataclass
class LoadedVLM:
    """A VLM ready for evaluation; ``model_id`` names VLM and encoder in result tables, e.g. ``tiny-vlm[tiny-clip]``.

    ``checkpoint_hash`` identifies the vision encoder; ``vlm_hash`` the rest of the VLM (language model,
    projector, cross-attention: everything but the swapped tower, :func:`~simclip_bench.models.checkpoint.
    weights_sha256`, plus anything else that decides its outputs, such as its prompt format version). Both are
    part of every stored row's identity: two VLM folders with one name never share rows.
    """

    vlm: VisionLanguageModel
    vlm_spec: str
    encoder_spec: str
    model_id: str
    checkpoint_hash: str
    vlm_hash: str = ""
