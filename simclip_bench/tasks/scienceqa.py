"""ScienceQA-IMG: multiple-choice science questions that come with an image, scored with LLaVA's
``eval_science_qa.py`` rules (:mod:`simclip_bench.metrics.scienceqa`): accuracy.

Prompt: the dataset's question text (context, question and lettered options, as LLaVA's
``llava_test_CQM-A.json`` writes them) in the model's format, in one of two styles (``--scienceqa-prompt``):
``robustvlm`` (default; RobustVLM's ``bash/eval_scienceqa.sh`` runs ``model_vqa_science.py`` without
``--single-pred-prompt``) or ``llava`` (LLaVA-1.5's ``scripts/v1_5/eval/sqa.sh``, which adds "Answer with
the option's letter from the given choices directly."). The tiny VLM, which was never taught letters, is
asked the question line alone and its answer is read back as the letter of the option it names.

Under attack (not in the references): the ensemble's untargeted runs on the right answer as the model would
give it (LLaVA: the letter), stopping a sample once it is answered wrongly.
"""
from __future__ import annotations

from collections.abc import Sequence

from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.metrics.scienceqa import OPTIONS, choice_correct
from simclip_bench.tasks.summary import MetricValue, mean_metric
from simclip_bench.vlm.base import VisionLanguageModel
from simclip_bench.vlm.llava_prompt import SCIENCEQA_STYLES

METRIC = "accuracy"
DEFAULT_STYLE = SCIENCEQA_STYLES[0]


class ScienceQATask:
    """Prompts, attack texts and scoring of ScienceQA-IMG."""

    name = "scienceqa"
    metric = METRIC
    attack_targets: tuple[str, ...] = ()

    def __init__(self, dataset: VLMDataset, style: str = DEFAULT_STYLE) -> None:
        if style not in SCIENCEQA_STYLES:
            raise ValueError(f"unknown ScienceQA prompt style {style!r}; choose one of {', '.join(SCIENCEQA_STYLES)}")
        self.dataset = dataset
        self.style = style

    def prompts(self, vlm: VisionLanguageModel) -> list[str]:
        return [vlm.choice_prompt(s.question or "", s.choices, self.style) for s in self.dataset.samples]

    def ground_truth(self, vlm: VisionLanguageModel) -> list[list[str]]:
        """The right answer as ``vlm`` gives it (LLaVA: the letter; the tiny VLM: the option's text)."""
        return [[vlm.choice_target(s.references[0], s.choices)] for s in self.dataset.samples]

    def score(self, vlm: VisionLanguageModel, indices: Sequence[int], texts: Sequence[str]) -> list[float]:
        out = []
        for i, t in zip(indices, texts, strict=True):
            s = self.dataset.samples[i]
            out.append(float(choice_correct(vlm.read_choice(t, s.choices), len(s.choices),
                                            OPTIONS.index(s.references[0]))))
        return out

    def summarise(self, texts: Sequence[str], scores: Sequence[float]) -> list[MetricValue]:
        return [mean_metric(self.metric, scores, bounded=True)]
