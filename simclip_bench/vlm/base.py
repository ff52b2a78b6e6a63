"""The VLM interface every task and attack talks to.

A VLM here is a vision encoder (swappable, images in [0,1] pixel space, normalisation inside) plus a
language model that reads the encoder's features. Tasks and attacks need exactly two things from it:

* ``generate(images, prompts, ...)``: the decoded text for each (image, prompt), with the task's
  :class:`Generation` arguments (greedy by default);
* ``loss(images, prompts, targets)``: the language-model loss of each target text given (image, prompt),
  per sample, differentiable with respect to the images (what APGD maximises or, targeted, minimises).
  ``target_scores`` returns the same loss plus, from the same forward pass, whether greedy decoding
  would begin with the target (every target token is the arg-max under teacher forcing): a free,
  exact success test for targeted attacks.

Prompts are the model's own instruction format: ``caption_prompt(dataset)``, ``vqa_prompt(question,
dataset)`` and ``choice_prompt(question, choices, style)`` give the wording the model was trained or
instructed with (per dataset where the reference varies it, e.g. LLaVA's VizWiz sentence), so tasks stay
model-agnostic. ``generation(task, dataset)`` and ``image_prep(task)`` say how the reference decodes and
preprocesses for that task. ``describe()`` lists everything besides weights that decides the outputs; it
enters the VLM's identity (:func:`vlm_identity`).

:class:`LoadedVLM` is what every loader returns (:mod:`.load` for the tiny VLM, :mod:`.llava` for LLaVA,
:mod:`.openflamingo` for OpenFlamingo): the VLM with its encoder swapped in, and how result tables name it.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

NATIVE_ENCODER = "native"  # --model native: keep the VLM's own vision tower


@dataclass(frozen=True)
class Generation:
    """Decoding arguments of one task (HF ``generate``'s): greedy when ``num_beams`` is 1. ``max_new_tokens``
    and ``min_new_tokens`` count generated tokens; ``length_penalty`` only matters for beam search."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImagePrep:
    """How a file becomes the model's input square: ``pad_fill`` None resizes the shorter side and
    centre-crops (CLIP's preprocessing); an RGB ``pad_fill`` first pads the image to a square with that
    colour (LLaVA's ``expand2square``), then resizes."""

    pad_fill: tuple[int, int, int] | None = None

    def describe(self) -> dict:
        return {"pad_to_square": self.pad_fill is not None, "pad_fill": list(self.pad_fill or ())}


CROP = ImagePrep()
# New tokens per task as the references generate them: RobustVLM vlm_eval/run_evaluation.py (captioning 20,
# VQA 5, TextVQA 10); LLaVA llava/eval/model_vqa_loader.py (POPE, 128) and model_vqa_science.py (ScienceQA, 1024).
REFERENCE_MAX_NEW_TOKENS = {"captioning": 20, "vqa": 5, "pope": 128, "scienceqa": 1024}
REFERENCE_MAX_NEW_TOKENS_BY_DATASET = {("vqa", "textvqa"): 10}


def reference_max_new_tokens(task: str, dataset: str = "") -> int:
    """The references' generation length for ``task`` on ``dataset`` (20 for a task they do not name)."""
    return REFERENCE_MAX_NEW_TOKENS_BY_DATASET.get((task, dataset), REFERENCE_MAX_NEW_TOKENS.get(task, 20))


class VisionLanguageModel(ABC):
    """A VLM with a swappable vision encoder; images are (B, 3, H, W) in [0,1] at ``image_size``."""

    name: str
    image_size: int

    @abstractmethod
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20,
                 min_new_tokens: int = 0, num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
        """One text per (image, prompt), without the prompt (greedy unless ``num_beams`` > 1)."""

    def generate_with(self, images: torch.Tensor, prompts: Sequence[str], generation: Generation) -> list[str]:
        """:meth:`generate` with a task's :class:`Generation` (arguments at their defaults are not passed, so a
        greedy-only model needs only ``max_new_tokens``)."""
        default = Generation()
        extra = {k: v for k, v in generation.describe().items() if k != "max_new_tokens" and v != getattr(default, k)}
        return self.generate(images, prompts, max_new_tokens=generation.max_new_tokens, **extra)

    @abstractmethod
    def target_scores(self, images: torch.Tensor, prompts: Sequence[str],
                      targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, greedy_match), both (B,): the mean token cross-entropy of ``targets`` after (image, prompt)
        in nats (float32, differentiable), and whether greedy decoding starts with the target."""

    def loss(self, images: torch.Tensor, prompts: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        """Per-sample mean token cross-entropy (B,) of ``targets`` after (image, prompt), in nats."""
        return self.target_scores(images, prompts, targets)[0]

    @abstractmethod
    def caption_prompt(self, dataset: str = "") -> str:
        """The prompt that asks this model for a short caption."""

    @abstractmethod
    def vqa_prompt(self, question: str, dataset: str = "") -> str:
        """The prompt that asks this model a question about ``dataset``'s image, expecting a short answer."""

    def choice_prompt(self, question: str, choices: Sequence[str], style: str = "") -> str:
        """The prompt of a multiple-choice question; ``question`` is the dataset's full text (context, question
        and lettered options, as LLaVA's ScienceQA file has it). Default: the question as it is."""
        return question

    def choice_target(self, letter: str, choices: Sequence[str]) -> str:
        """The text this model answers a multiple-choice question with when ``letter`` is right (what an
        untargeted attack pushes away from). Default: the letter."""
        return letter

    def read_choice(self, text: str, choices: Sequence[str]) -> str:
        """A generated answer as the multiple-choice scorer should see it. Default: unchanged."""
        return text

    def generation(self, task: str, dataset: str = "") -> Generation:
        """How this model decodes ``task`` (default: greedy, 20 new tokens)."""
        return Generation()

    def image_prep(self, task: str) -> ImagePrep:
        """How images are preprocessed for ``task`` (default: shorter side resized, centre crop)."""
        return CROP

    def describe(self) -> dict:
        """Everything besides weights that decides this model's outputs (templates, suffixes, image
        processing, generation per task, answer handling); part of its identity (:func:`vlm_identity`)."""
        return {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def teacher_forced_scores(logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor,
                          decides: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``target_scores`` of a causal LM from one teacher-forced pass: the mean cross-entropy over the ``scored``
    label positions per sample, and whether greedy decoding would produce every token at the ``decides``
    positions (default: the scored ones). ``logits`` (N, L, V) predict ``labels`` (N, L)."""
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    loss = (nll * scored).sum(1) / scored.sum(1).clamp(min=1)
    decides = scored if decides is None else decides
    return loss, ((logits.argmax(-1) == labels) | ~decides).all(1)


def vlm_identity(weights_digest: str, vlm: VisionLanguageModel) -> str:
    """``LoadedVLM.vlm_hash``: sha256 of the weights' digest (everything but the swapped tower,
    :func:`~simclip_bench.models.checkpoint.weights_sha256`) and of ``vlm.describe()`` as sorted JSON."""
    described = json.dumps(vlm.describe(), sort_keys=True, default=str)
    return hashlib.sha256(f"{weights_digest}\n{described}".encode()).hexdigest()


@dataclass
class LoadedVLM:
    """A VLM ready for evaluation; ``model_id`` names VLM and encoder in result tables, e.g. ``tiny-vlm[tiny-clip]``.

    ``checkpoint_hash`` identifies the vision encoder; ``vlm_hash`` the rest of the VLM (language model,
    projector, cross-attention: everything but the swapped tower, :func:`~simclip_bench.models.checkpoint.
    weights_sha256`, plus everything else that decides its outputs, :meth:`VisionLanguageModel.describe`;
    see :func:`vlm_identity`). Both are part of every stored row's identity: two VLM folders with one name
    never share rows.
    """

    vlm: VisionLanguageModel
    vlm_spec: str
    encoder_spec: str
    model_id: str
    checkpoint_hash: str
    vlm_hash: str = ""
