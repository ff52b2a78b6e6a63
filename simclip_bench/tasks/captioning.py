"""Captioning: the VLM describes each image; scored with CIDEr-D (:mod:`simclip_bench.metrics.cider`).

Prompt: the model's own caption prompt (tiny VLM ``caption:``; LLaVA "Provide a short caption for this
image."; OpenFlamingo ``<image>Output:`` after its demonstrations). The generated text is cut before any
"Output" and its double quotes removed before scoring (RobustVLM ``vlm_eval/run_evaluation.py``:
``postprocess_captioning_generation(out).replace('"', "")``). Attack texts: up to five reference
captions, in the dataset's order (RobustVLM). The ensemble stops attacking a sample at CIDEr-D 0.10 on COCO
and the generated data, 0.02 on Flickr30k (RobustVLM's 10 and 2 on the printed ×100 scale). Per-sample
CIDEr-D uses document frequencies from all references of the evaluated subset, so the mean of the
per-sample scores is the corpus score.
"""
from __future__ import annotations

from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.cider import CiderScorer
from simclip_bench.tasks.summary import MetricValue, mean_metric
from simclip_bench.tasks.vlm_attack import attack_texts
from simclip_bench.vlm.base import VisionLanguageModel

METRIC = "cider"


def postprocess_caption(text: str) -> str:
    """RobustVLM's caption clean-up: the text before the first "Output", double quotes removed."""
    return text.split("Output", 1)[0].replace('"', "")


class CaptioningTask:
    """Prompts, attack texts and scoring of a captioning dataset."""

    name = "captioning"
    metric = METRIC
    attack_targets: tuple[str, ...] = ()

    def __init__(self, dataset: VLMDataset, max_references: int = 5) -> None:
        self.dataset = dataset
        self.scorer = CiderScorer([s.references for s in dataset.samples])
        self.max_references = max_references

    def prompts(self, vlm: VisionLanguageModel) -> list[str]:
        return [vlm.caption_prompt(dataset=self.dataset.name)] * len(self.dataset)

    def ground_truth(self, vlm: VisionLanguageModel | None = None) -> list[list[str]]:
        return [attack_texts(s.references, self.max_references, distinct_by_frequency=False)
                for s in self.dataset.samples]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        return self.scorer.scores(indices, [postprocess_caption(t) for t in texts])

    def summarise(self, texts: Sequence[str], scores: Sequence[float]) -> list[MetricValue]:
        """The row values of a whole evaluation: the mean of the per-sample scores (texts in dataset order)."""
        return [mean_metric(self.metric, scores, bounded=False)]
