"""Visual question answering: the VLM answers each question; scored with VQA accuracy
(:mod:`simclip_bench.metrics.vqa_accuracy`, the official evaluation's normalisation and 10-choose-9 rule).

Prompt: the model's own short-answer format (tiny VLM: the question; LLaVA: the question, then "Answer the
question using a single word or phrase."). The answer is the generated text's first line. Attack texts
(RobustVLM): up to five distinct human answers, most frequent first, untargeted; then targeted runs towards
"Maybe" and "Word". A sample stops being attacked once its accuracy is 0.
"""
from __future__ import annotations

from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.vqa_accuracy import vqa_accuracy
from simclip_bench.tasks.vlm_attack import VQA_TARGETS, attack_texts
from simclip_bench.vlm.base import VisionLanguageModel

METRIC = "vqa_accuracy"


class VQATask:
    """Prompts, attack texts and scoring of a VQA dataset."""

    name = "vqa"
    metric = METRIC
    attack_targets: tuple[str, ...] = VQA_TARGETS

    def __init__(self, dataset: VLMDataset, max_references: int = 5) -> None:
        self.dataset = dataset
        self.max_references = max_references

    def prompts(self, vlm: VisionLanguageModel) -> list[str]:
        return [vlm.vqa_prompt(s.question or "") for s in self.dataset.samples]

    def ground_truth(self) -> list[list[str]]:
        return [attack_texts(list(s.references), self.max_references, distinct_by_frequency=True)
                for s in self.dataset.samples]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        return [vqa_accuracy(vlm.postprocess_answer(t), self.dataset.samples[i].references)
                for i, t in zip(indices, texts, strict=True)]
