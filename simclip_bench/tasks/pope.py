"""POPE: yes/no questions about objects ("Is there a {object} in the image?"), one split per dataset, scored
with LLaVA's ``eval_pope.py`` rules (:mod:`simclip_bench.metrics.pope`).

Prompt: the model's short-answer prompt (LLaVA: the question plus "\\nAnswer the question using a single word
or phrase.", which is the text of LLaVA's ``llava_pope_test.jsonl``; tiny VLM: the question). Decoding: the
model's POPE setting (LLaVA ``model_vqa_loader.py``: greedy, 128 new tokens). Per sample the score is 1
when the answer, read as "yes" or "no", matches the label, else 0; the split's rows are accuracy, precision,
recall, F1 and yes-ratio of the answers (clean, or each sample's worst case under attack).

Under attack (not in the references, which measure POPE clean): the ensemble's untargeted runs on the label
("yes" or "no", as annotated, as RobustVLM attacks VQA with the annotated answers), stopping a sample once
it is answered wrongly.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.pope import METRICS, pope_answer, pope_counts, pope_label
from simclip_bench.results.schema import wilson_interval
from simclip_bench.tasks.summary import MetricValue
from simclip_bench.vlm.base import VisionLanguageModel

METRIC = "f1"  # the headline: RobustVLM and LLaVA report F1 per split and its average
BOOTSTRAP_RESAMPLES = 1000


class PopeTask:
    """Prompts, attack texts and scoring of one POPE split."""

    name = "pope"
    metric = METRIC
    attack_targets: tuple[str, ...] = ()

    def __init__(self, dataset: VLMDataset) -> None:
        self.dataset = dataset
        self.labels = [pope_label(s.references[0]) for s in dataset.samples]

    def prompts(self, vlm: VisionLanguageModel) -> list[str]:
        return [vlm.vqa_prompt(s.question or "", dataset="pope") for s in self.dataset.samples]

    def ground_truth(self, vlm: VisionLanguageModel | None = None) -> list[list[str]]:
        return [[label] for label in self.labels]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        return [float(pope_answer(t) == self.labels[i]) for i, t in zip(indices, texts, strict=True)]

    def summarise(self, texts: Sequence[str], scores: Sequence[float]) -> list[MetricValue]:
        """Accuracy, precision, recall and yes-ratio with Wilson intervals of their proportions; F1 with a
        seeded percentile bootstrap (1 000 resamples of the samples)."""
        counts = pope_counts(texts, self.labels)
        values = counts.metrics()
        shares = {"accuracy": (counts.tp + counts.tn, counts.n), "precision": (counts.tp, counts.tp + counts.fp),
                  "recall": (counts.tp, counts.tp + counts.fn), "yes_ratio": (counts.tp + counts.fp, counts.n)}
        out = []
        for metric in METRICS:
            lo, hi = wilson_interval(*shares[metric]) if metric in shares else self._f1_interval(texts)
            out.append(MetricValue(metric, values[metric], lo, hi))
        return out

    def _f1_interval(self, texts: Sequence[str]) -> tuple[float, float]:
        rng = random.Random(0)
        n = len(texts)
        f1s = sorted(pope_counts([texts[k] for k in picks], [self.labels[k] for k in picks]).metrics()["f1"]
                     for picks in ([rng.randrange(n) for _ in range(n)] for _ in range(BOOTSTRAP_RESAMPLES)))
        return f1s[int(0.025 * len(f1s))], f1s[int(0.975 * len(f1s)) - 1]
