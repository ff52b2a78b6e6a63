"""The option letters of a multiple-choice question, as LLaVA's ScienceQA evaluation writes them
(``llava/eval/eval_science_qa.py``, ``--options ["A", "B", "C", "D", "E"]``): shared by the data readers that
build the questions, the metric that parses answers and the VLMs that prompt for a letter."""
from __future__ import annotations

OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
