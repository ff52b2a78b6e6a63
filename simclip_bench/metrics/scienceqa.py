"""ScienceQA-IMG accuracy (Lu et al., NeurIPS 2022), scored as LLaVA's ``llava/eval/eval_science_qa.py``
(run by RobustVLM's ``bash/eval_scienceqa.sh``) scores it: the share of test questions *with an image*
whose parsed answer is the right option.

Parsing a generated answer (:func:`parse_choice`), with the options ``A`` ... ``E``:

1. the whole text is one of the letters: that letter;
2. else, a text of at least 3 characters starting with a letter followed by ". ": that letter;
3. else, the pattern ``The answer is ([A-Z]).`` (the "." matching any character) found exactly once: its
   letter;
4. else ``FAILED``.

A parsed letter counts only when it is one of the question's first ``len(choices)`` letters and the right
one; ``FAILED`` and out-of-range letters are wrong (the reference's ``get_pred_idx`` returns -1).
"""
from __future__ import annotations

import re

from simclip_bench.multiple_choice import OPTION_LETTERS as OPTIONS

FAILED = "FAILED"
_THE_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_choice(text: str) -> str:
    """The letter eval_science_qa.py reads from ``text``, or ``FAILED`` (module docstring)."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _THE_ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else FAILED


def choice_index(text: str, n_choices: int) -> int:
    """The option index the answer names, or -1 (failed to parse, or a letter past the question's options)."""
    letter = parse_choice(text)
    return OPTIONS.index(letter) if letter in OPTIONS[:n_choices] else -1


def choice_correct(text: str, n_choices: int, answer: int) -> bool:
    """Whether ``text`` names option ``answer`` (0-based) of a question with ``n_choices`` options."""
    return choice_index(text, n_choices) == answer
