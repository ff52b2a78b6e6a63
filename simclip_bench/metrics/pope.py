"""POPE (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models", EMNLP 2023), scored
as LLaVA's ``llava/eval/eval_pope.py`` (the script RobustVLM's ``bash/eval_pope.sh`` runs) scores it.

* **Reading an answer** (:func:`pope_answer`): only the first sentence counts (the text before the first
  "."), commas are removed, and the answer is "no" when one of its space-separated words is exactly
  ``No``, ``not`` or ``no``; anything else, an empty answer included, is "yes".
* **Metrics per split** (random, popular, adversarial), with "yes" the positive class: accuracy
  (TP+TN)/N, precision TP/(TP+FP), recall TP/(TP+FN), F1 2PR/(P+R), and the yes-ratio, the share of
  answers read as "yes". A label is "no" when it is the string ``no``, else "yes".

One deviation: where a denominator is 0 (no "yes" answers, so no precision; no "yes" labels, so no
recall; precision and recall both 0, so no F1) the reference raises ``ZeroDivisionError``; here that
metric is 0.0, so an all-"no" answer set scores precision, recall and F1 0 with its accuracy intact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NEGATIVE_WORDS = frozenset({"No", "not", "no"})
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def pope_answer(text: str) -> str:
    """``yes`` or ``no``: how eval_pope.py reads a generated answer (module docstring)."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if NEGATIVE_WORDS.intersection(words) else "yes"


def pope_label(label: str) -> str:
    """``no`` for the label ``no``, else ``yes`` (eval_pope.py)."""
    return "no" if label == "no" else "yes"


@dataclass(frozen=True)
class PopeCounts:
    """The confusion counts of one split, "yes" the positive class."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def metrics(self) -> dict[str, float]:
        """Accuracy, precision, recall, F1 and yes-ratio as fractions in [0,1] (0.0 for an empty denominator)."""
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"accuracy": (self.tp + self.tn) / self.n if self.n else float("nan"), "precision": precision,
                "recall": recall, "f1": f1, "yes_ratio": (self.tp + self.fp) / self.n if self.n else float("nan")}


def pope_counts(answers: Sequence[str], labels: Sequence[str]) -> PopeCounts:
    """Confusion counts of generated ``answers`` (raw texts, read by :func:`pope_answer`) against ``labels``."""
    if len(answers) != len(labels):
        raise ValueError(f"{len(answers)} answers but {len(labels)} labels")
    tp = fp = tn = fn = 0
    for answer, label in zip(answers, labels, strict=True):
        said_yes, is_yes = pope_answer(answer) == "yes", pope_label(label) == "yes"
        tp += said_yes and is_yes
        fp += said_yes and not is_yes
        tn += not said_yes and not is_yes
        fn += not said_yes and is_yes
    return PopeCounts(tp, fp, tn, fn)


def pope_metrics(answers: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """:meth:`PopeCounts.metrics` of ``answers`` against ``labels``."""
    return pope_counts(answers, labels).metrics()
