"""The tiny VLM's word-level vocabulary, built deterministically from the generated shapes text.

Text is lower-cased and split into words, with ``. , ? : !`` as tokens of their own. The vocabulary is
every word the shapes captions, questions, answers and the tiny VLM's prompts can contain (enumerated
from the generator, not sampled), plus the targets of the VQA attack protocol ("maybe", "word"), in
sorted order after the special tokens. It is stored with the shipped weights, so a change to the
generator cannot silently shift token ids under trained weights.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, SEP, EOS, UNK = "<pad>", "<bos>", "<sep>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, SEP, EOS, UNK)
_TOKEN = re.compile(r"[a-z0-9']+|[.,?:!]")
_SPACE_BEFORE_PUNCT = re.compile(r" ([.,?:!])")


def split_words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens; anything else (other symbols, spaces) is dropped."""
    return _TOKEN.findall(text.lower())


def join_words(words: Iterable[str]) -> str:
    """Inverse of :func:`split_words` for display: words joined by spaces, punctuation attached."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(words))


class WordVocab:
    """A fixed list of words; id 0 is padding. Unknown words map to ``<unk>``."""

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("duplicate words in vocabulary")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad, self.bos, self.sep, self.eos, self.unk = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` up to the first ``<eos>``; special tokens are left out."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i >= len(SPECIALS):
                out.append(self.words[i])
        return join_words(out)


def shapes_vocabulary(extra_texts: Iterable[str] = ()) -> WordVocab:
    """Every word of the generated shapes captions and QA, plus ``extra_texts`` (prompts, attack targets)."""
    from simclip_bench.data import shapes

    words: set[str] = set()
    rng = np.random.default_rng(0)
    sizes = ("large", "small")
    positions = [p for row in shapes.POSITIONS for p in row]
    for size, color, shape, background, position in itertools.product(
            sizes, shapes.COLORS, shapes.SHAPES, shapes.BACKGROUNDS, positions):
        texts = list(shapes._captions(size, color, shape, background, position))
        # The QA's one random choice is which shape a yes/no question names: a shape word captions already have.
        texts += [t for qa in shapes._qa(rng, size, color, shape, background, position) for t in qa]
        for t in texts:
            words.update(split_words(t))
    for t in extra_texts:
        words.update(split_words(t))
    return WordVocab(list(SPECIALS) + sorted(words))
