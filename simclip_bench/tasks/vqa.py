"""Visual question answering: the VLM answers each question; scored with VQA accuracy
(:mod:`simclip_bench.metrics.vqa_accuracy`, the 10-choose-9 rule), by default as the official evaluation
normalises answers, or as RobustVLM does (``metric_variant="robustvlm"``). The variant scores the clean
answers and also decides, during the attack, when a sample counts as fooled.

Prompt: the model's own short-answer format (tiny VLM: the question; LLaVA: the question, then "Answer the
question using a single word or phrase."). The answer is the generated text's first line. Attack texts
(RobustVLM): up to five distinct human answers, most frequent first, untargeted; then targeted runs towards
"Maybe" and "Word". A sample stops being attacked once its accuracy is 0.
"""
from __future__ import annotations

from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.vqa_accuracy import DEFAULT_VQA_METRIC, VQA_METRICS, vqa_accuracy
from simclip_bench.tasks.vlm_attack import VQA_TARGETS, attack_texts
from simclip_bench.vlm.base import VisionLanguageModel

METRIC = "vqa_accuracy"


class VQATask:
    """Prompts, attack texts and scoring of a VQA dataset."""

    name = "vqa"
    metric = METRIC
    attack_targets: tuple[str, ...] = VQA_TARGETS

    def __init__(self, dataset: VLMDataset, max_references: int = 5, metric_variant: str = DEFAULT_VQA_METRIC) -> None:
        if metric_variant not in VQA_METRICS:
            raise ValueError(f"unknown VQA metric variant {metric_variant!r}; choose one of {', '.join(VQA_METRICS)}")
        self.dataset = dataset
        self.max_references = max_references
        self.metric_variant = metric_variant

    def prompts(self, vlm: VisionLanguageModel) -> list[str]:
        return [vlm.vqa_prompt(s.question or "") for s in self.dataset.samples]

    def ground_truth(self) -> list[list[str]]:
        return [attack_texts(list(s.references), self.max_references, distinct_by_frequency=True)
                for s in self.dataset.samples]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        return [vqa_accuracy(vlm.postprocess_answer(t), self.dataset.samples[i].references, self.metric_variant)
                for i, t in zip(indices, texts, strict=True)]
