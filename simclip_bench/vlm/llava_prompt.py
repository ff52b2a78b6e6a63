"""LLaVA-1.5's prompts, labels and decoding as RobustVLM runs them (each constant names its reference file).

* **Conversation** (``llava/conversation.py``, ``conv_vicuna_v1``; RobustVLM's ``open_flamingo/eval/models/
  llava.py`` sets ``conv_mode = "vicuna_v1"``): the system sentence, then ``USER: <image>\\n{message}`` and
  ``ASSISTANT:``, separators " " and "</s>" (``SeparatorStyle.TWO``). With an answer (the attack's text),
  the turn ends ``ASSISTANT: {answer}</s>``.
* **Messages**: captioning "Provide a short caption for this image." (``get_caption_prompt``); VQA the
  question (not stripped) plus "\\nAnswer the question using a single word or phrase.", and for VizWiz first
  "\\nWhen the provided information is insufficient, respond with 'Unanswerable'." (``get_vqa_prompt``);
  POPE the same short-answer suffix (LLaVA's ``llava_pope_test.jsonl`` text is POPE's question plus it);
  ScienceQA the file's question with ``<image>`` removed and stripped (``llava/eval/model_vqa_science.py``),
  plus "\\nAnswer with the option's letter from the given choices directly." only with
  ``--single-pred-prompt`` (LLaVA's ``scripts/v1_5/eval/sqa.sh``; RobustVLM's ``bash/eval_scienceqa.sh`` runs
  without it).
* **Tokens** (``llava/mm_utils.py``, ``tokenizer_image_token``): the text is split at ``<image>``, each
  chunk tokenised on its own, the beginning-of-sequence token kept once, and the image token put between
  the chunks (here repeated once per image feature, as HF LLaVA expects).
* **Labels** (``set_inputs``): everything up to and including "ASSISTANT:" is masked; the answer and the
  end token "</s>" are scored.
* **Decoding** (``get_outputs``): the stop string "</s>" (``sep2``) stripped from the decoded text.
"""
from __future__ import annotations

from collections.abc import Sequence

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = ("USER", "ASSISTANT")
SEP, SEP2 = " ", "</s>"
STOP_STRING = SEP2
IMAGE_PLACEHOLDER = "<image>"
CAPTION_MESSAGE = "Provide a short caption for this image."
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
VIZWIZ_UNANSWERABLE = "\nWhen the provided information is insufficient, respond with 'Unanswerable'."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."
SCIENCEQA_STYLES: tuple[str, ...] = ("robustvlm", "llava")  # bash/eval_scienceqa.sh; sqa.sh --single-pred-prompt


def vqa_message(question: str, dataset: str = "") -> str:
    """The VQA message of ``get_vqa_prompt``: the question and its per-dataset suffix."""
    return question + (VIZWIZ_UNANSWERABLE if dataset == "vizwiz" else "") + SHORT_ANSWER


def choice_message(question: str, style: str = "robustvlm") -> str:
    """The ScienceQA message: the question as the file has it, with the letter instruction in LLaVA's style."""
    if style not in SCIENCEQA_STYLES:
        raise ValueError(f"unknown ScienceQA prompt style {style!r}; choose one of {', '.join(SCIENCEQA_STYLES)}")
    return question + (LETTER_ANSWER if style == "llava" else "")


def conversation(message: str, answer: str | None = None) -> str:
    """``conv_vicuna_v1`` with one user turn (``<image>`` first) and the assistant's turn, open or answered."""
    text = f"{SYSTEM}{SEP}{ROLES[0]}: {IMAGE_PLACEHOLDER}\n{message}{SEP}"
    return text + (f"{ROLES[1]}: {answer}{SEP2}" if answer else f"{ROLES[1]}:")


def context_of(text: str) -> str:
    """The part of a conversation the labels mask: everything up to and including "ASSISTANT:"."""
    return text.split(f"{ROLES[1]}:")[0] + f"{ROLES[1]}:"


def image_token_ids(tokenizer, text: str, image_token_id: int, n_image_tokens: int) -> list[int]:
    """``tokenizer_image_token``: chunks between ``<image>`` tokenised separately, one beginning-of-sequence
    token, ``n_image_tokens`` image tokens where ``<image>`` was."""
    chunks: Sequence[list[int]] = [tokenizer(c).input_ids for c in text.split(IMAGE_PLACEHOLDER)]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and bos is not None and chunks[0][0] == bos else 0
    ids = [bos] if offset else []
    for k, chunk in enumerate(chunks):
        if k:
            ids += [image_token_id] * n_image_tokens
        ids += chunk[offset:]
    return ids


def strip_stop(text: str) -> str:
    """The decoded answer: stripped, the stop string cut from its end, stripped again."""
    text = text.strip()
    if text.endswith(STOP_STRING):
        text = text[:-len(STOP_STRING)]
    return text.strip()
