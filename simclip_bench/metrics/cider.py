"""CIDEr-D (Vedantam, Zitnick & Parikh, "CIDEr: Consensus-based Image Description Evaluation",
CVPR 2015), computed the way the COCO caption evaluation (``pycocoevalcap``) computes it.

For every image, a candidate caption ``c`` and reference captions ``S`` (COCO: 5):

* captions are tokenised (:func:`tokenize`) and cut into n-grams, n = 1..4;
* each n-gram ``g`` gets a TF-IDF weight ``tf(g) · (log N − log max(1, df(g)))``, where ``N`` is the
  number of images in the evaluated set and ``df(g)`` the number of images whose references contain ``g``
  (so the IDF depends on the whole set: a corpus score, not a per-pair one);
* for each n and each reference ``s``:
  ``sim_n(c, s) = Σ_g min(w_c(g), w_s(g)) · w_s(g) / (‖w_c‖ ‖w_s‖) · exp(−(ℓ_c − ℓ_s)² / (2σ²))``
  with σ = 6 and ``ℓ`` the caption's number of bigrams (tokens − 1, as in the reference code);
  the ``min`` clipping and the length penalty are what the "-D" adds;
* ``CIDEr-D(c, S) = 10 · mean_s mean_n sim_n(c, s)``; the corpus score is the mean over images.

Scores are on the COCO evaluation's scale (a good COCO captioner scores about 1.1; papers print 110).

Tokenisation: the COCO evaluation runs Stanford CoreNLP's PTB tokenizer (Java) with lower-casing and
then drops punctuation tokens. Java is not a dependency here, so :func:`tokenize` does the equivalent
for caption text: lower-case; split off the clitics ``n't 's 're 've 'll 'd 'm`` as their own tokens (as
PTB does); drop punctuation (``. , ? ! : ; " ' ` ( ) [ ] { }`` and dashes standing alone), keeping
hyphens inside words (``t-shirt``) and decimal points inside numbers (``3.5``). Captions with exotic
characters may tokenise slightly differently than under CoreNLP.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

MAX_N = 4
SIGMA = 6.0

_CLITIC = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
# Punctuation that separates tokens; '-' and '.' are handled separately to keep "t-shirt" and "3.5".
_SEPARATORS = re.compile(r"[,?!:;\"`()\[\]{}]")
_LOOSE_PERIOD = re.compile(r"\.(?!\d)|(?<!\d)\.")
_PUNCT_TOKEN = re.compile(r"^[\W_]+$")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of a caption, punctuation removed (the PTB-tokenizer equivalent above)."""
    text = _CLITIC.sub(r"\1 \2", text.lower())
    text = _SEPARATORS.sub(" ", text)
    text = _LOOSE_PERIOD.sub(" ", text)
    tokens = []
    for tok in text.split():
        if tok.startswith("'") and tok not in ("'s", "'re", "'ve", "'ll", "'d", "'m"):
            tok = tok.strip("'")
        elif tok.endswith("'"):
            tok = tok.rstrip("'")
        if tok and not _PUNCT_TOKEN.match(tok):
            tokens.append(tok)
    return tokens


def ngram_counts(tokens: Sequence[str], max_n: int = MAX_N) -> Counter:
    """Counts of every n-gram (as a tuple of tokens) for n = 1..max_n."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _weights(counts: Counter, df: Mapping[tuple, int], log_n: float) -> tuple[list[dict], list[float], int]:
    """TF-IDF vector per n, its norm per n, and the caption length in bigrams."""
    vec: list[dict] = [{} for _ in range(MAX_N)]
    norm = [0.0] * MAX_N
    for gram, tf in counts.items():
        w = tf * (log_n - math.log(max(1.0, df.get(gram, 0))))
        vec[len(gram) - 1][gram] = w
        norm[len(gram) - 1] += w * w
    bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, [math.sqrt(v) for v in norm], bigrams


def _similarity(cand: tuple, ref: tuple, sigma: float) -> float:
    (vc, nc, lc), (vr, nr, lr) = cand, ref
    penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2))
    total = 0.0
    for n in range(MAX_N):
        dot = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vc[n].items())
        if nc[n] != 0 and nr[n] != 0:
            dot /= nc[n] * nr[n]
        total += dot * penalty
    return total / MAX_N


class CiderScorer:
    """CIDEr-D against a fixed evaluation set: document frequencies and ``N`` come from all references.

    Per-sample scores of any candidates (clean or adversarial, for any subset of the images) are then
    on one scale, and the corpus score of a full set of candidates is the mean of its per-sample scores.
    """

    def __init__(self, references: Sequence[Sequence[str]], sigma: float = SIGMA) -> None:
        if not references:
            raise ValueError("CIDEr-D needs at least one image with references")
        self.sigma = sigma
        ref_counts = [[ngram_counts(tokenize(r)) for r in refs] for refs in references]
        df: Counter = Counter()
        for counts in ref_counts:
            df.update(set().union(*[c.keys() for c in counts]) if counts else set())
        self.df = df
        self.log_n = math.log(float(len(references)))
        self.ref_weights = [[_weights(c, df, self.log_n) for c in counts] for counts in ref_counts]

    def __len__(self) -> int:
        return len(self.ref_weights)

    def score(self, index: int, candidate: str) -> float:
        """CIDEr-D of ``candidate`` for image ``index`` of the evaluation set."""
        c = _weights(ngram_counts(tokenize(candidate)), self.df, self.log_n)
        sims = [_similarity(c, r, self.sigma) for r in self.ref_weights[index]]
        return 10.0 * sum(sims) / len(sims) if sims else 0.0

    def scores(self, indices: Sequence[int], candidates: Sequence[str]) -> list[float]:
        return [self.score(i, c) for i, c in zip(indices, candidates, strict=True)]


def cider_d_scores(candidates: Sequence[str], references: Sequence[Sequence[str]],
                   sigma: float = SIGMA) -> list[float]:
    """Per-image CIDEr-D of ``candidates[i]`` against ``references[i]``; the IDF comes from all references.

    The corpus CIDEr-D is the mean of the returned list (:func:`cider_d`).
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if not candidates:
        return []
    return CiderScorer(references, sigma).scores(range(len(candidates)), candidates)


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = SIGMA) -> float:
    """Corpus CIDEr-D: the mean of :func:`cider_d_scores` (COCO scale; ×100 for the usual printed number)."""
    scores = cider_d_scores(candidates, references, sigma)
    return sum(scores) / len(scores) if scores else float("nan")
