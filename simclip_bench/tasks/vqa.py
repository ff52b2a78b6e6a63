"""Visual question answering: the VLM answers each question; scored with VQA accuracy
(:mod:`simclip_bench.metrics.vqa_accuracy`, the 10-choose-9 rule), by default as the official evaluation
normalises answers, or as RobustVLM does (``metric_variant="robustvlm"``). The variant scores the clean
answers and also decides, during the attack, when a sample counts as fooled.

Prompt: the model's own short-answer format (tiny VLM: the question; LLaVA: the question, then "Answer the
question using a single word or phrase.", for VizWiz first its "Unanswerable" sentence). The answer is the
generated text cut at the first "Question", "Answer" or "Short", then at the first ", " (RobustVLM
``open_flamingo/eval/vqa_metric.py``, ``postprocess_vqa_generation``, applied in ``vlm_eval/
run_evaluation.py`` to every model's output). Attack texts (RobustVLM): up to five distinct human answers,
most frequent first, untargeted; then targeted runs towards "maybe" and "Word". A sample stops being
attacked once its accuracy is 0.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.vqa_accuracy import DEFAULT_VQA_METRIC, VQA_METRICS, vqa_accuracy
from simclip_bench.tasks.summary import MetricValue, mean_metric
from simclip_bench.tasks.vlm_attack import VQA_TARGETS, attack_texts
from simclip_bench.vlm.base import VisionLanguageModel

METRIC = "vqa_accuracy"
_ANSWER_END = re.compile("Question|Answer|Short")


def postprocess_vqa_answer(text: str) -> str:
    """RobustVLM's answer extraction: the text before the first "Question"/"Answer"/"Short", then before ", "."""
    return _ANSWER_END.split(text, maxsplit=1)[0].split(", ", 1)[0]


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
        return [vlm.vqa_prompt(s.question or "", dataset=self.dataset.name) for s in self.dataset.samples]

    def ground_truth(self, vlm: VisionLanguageModel | None = None) -> list[list[str]]:
        return [attack_texts(list(s.references), self.max_references, distinct_by_frequency=True)
                for s in self.dataset.samples]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        return [vqa_accuracy(postprocess_vqa_answer(t), self.dataset.samples[i].references, self.metric_variant)
                for i, t in zip(indices, texts, strict=True)]

    def summarise(self, texts: Sequence[str], scores: Sequence[float]) -> list[MetricValue]:
        """The row values of a whole evaluation: the mean of the per-sample scores (texts in dataset order)."""
        return [mean_metric(self.metric, scores, bounded=True)]
