"""VQA accuracy (Antol et al., "VQA: Visual Question Answering", ICCV 2015), computed the way the
official evaluation (GT-Vision-Lab ``vqaEval.py``, used for VQAv2, TextVQA, VizWiz, OK-VQA) does.

For a predicted answer and the human answers (VQAv2: 10):

1. the prediction is normalised: newlines and tabs become spaces, then :func:`normalize_punctuation`,
   then :func:`normalize_words` (lower-case, number words to digits, articles dropped, contractions
   given their apostrophe);
2. the human answers get :func:`normalize_punctuation` only, and only when they are not all the same
   (the official code's rule; the answers in the VQA annotation files are already normalised);
3. accuracy = the mean, over the 10 ways of leaving one human out, of ``min(#matching others / 3, 1)``.
   With 10 answers this gives 1 for ≥ 4 matches, 0.9 for 3, 0.6 for 2, 0.3 for 1.

:func:`normalize_punctuation` follows the official rules: each of the characters ``; / [ ] " { } ( ) =
+ \\ _ - > < @ ` , ? !`` is deleted when the text has it next to a space anywhere (or the text contains
a digit-comma-digit such as "1,000"), and otherwise replaced by a space; then every period not followed
by a digit is deleted ("3.5" keeps its point, "yes." loses it).

**Two variants** (``variant=``, :data:`VQA_METRICS`); they differ only in step 2, the human answers:

* ``official`` (default) -- the rule above: GT-Vision-Lab/VQA
  ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, ``VQAEval.evaluate``. The default because it is the
  VQA challenge's rule, behind the VQAv2, TextVQA and VizWiz leaderboards and almost every published VQA
  number.
* ``robustvlm`` -- RobustVLM (chs20/RobustVLM ``open_flamingo/eval/vqa_metric.py``, ``VQAEval.evaluate``;
  RobustVLM's edit of OpenFlamingo's copy, whose own rule is a third one): every human answer, always
  (unanimous or not), gets newlines and tabs turned into spaces, outer whitespace stripped, then
  :func:`normalize_punctuation` *and* :func:`normalize_words`, exactly like the prediction. Use it to
  reproduce the VQA tables of RobustVLM (and of papers evaluated with its code). The two agree whenever
  the human answers are already normalised; they differ when a human answer holds capitals, number
  words, articles or contractions without apostrophe ("Two", "the dog", "dont"), or punctuation while all
  answers agree ("t-shirt" x 10): e.g. the prediction "2" against ten "Two" scores 0 with ``official``,
  1 with ``robustvlm``.

Both references also run their period rule with ``re.UNICODE`` passed as the substitution *count*, so
only the first 32 periods of a text are deleted; here all are (a difference only past 32 periods). The
GT-Vision-Lab file compares human answers without first cleaning whitespace; here (as in OpenFlamingo's
and RobustVLM's copies) newlines and tabs become spaces and outer whitespace is stripped in both
variants, which matters only for an annotation answer with outer whitespace, tabs or newlines.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

PUNCTUATION: tuple[str, ...] = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                                ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS: dict[str, str] = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
# The official table of answers written without their apostrophe, as "written=restored" pairs.
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've couldnt've=couldn't've
didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't
havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's
isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't
notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've
shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've
somebodyll=somebody'll somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's
thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't
wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's
whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't
wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split("=", 1) for pair in _CONTRACTION_PAIRS.split())
# The official table also lists "Id've", "I'dve", "Im" and "Ive", which never match: words are lower-cased first.

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
HUMANS_FOR_FULL_CREDIT = 3
VQA_METRICS: tuple[str, ...] = ("official", "robustvlm")
"""The variants of :func:`vqa_accuracy` (module docstring); the first is the default."""
DEFAULT_VQA_METRIC = VQA_METRICS[0]


def normalize_punctuation(text: str) -> str:
    """The official punctuation rule (module docstring); the decision per character looks at the input text."""
    out = text
    strip_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if strip_all or f"{p} " in text or f" {p}" in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_words(text: str) -> str:
    """Lower-case, split on whitespace, map number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """How both variants normalise a predicted answer (and ``robustvlm`` every human answer)."""
    return normalize_words(normalize_punctuation(_one_line(text)))


def normalize_human_answers(human_answers: Sequence[str], variant: str = DEFAULT_VQA_METRIC) -> list[str]:
    """The human answers as ``variant`` compares them with the normalised prediction (module docstring)."""
    if variant not in VQA_METRICS:
        raise ValueError(f"unknown VQA metric variant {variant!r}; choose one of {', '.join(VQA_METRICS)}")
    if variant == "robustvlm":
        return [normalize_answer(a) for a in human_answers]
    answers = [_one_line(a) for a in human_answers]
    return [normalize_punctuation(a) for a in answers] if len(set(answers)) > 1 else answers


def vqa_accuracy(prediction: str, human_answers: Sequence[str], variant: str = DEFAULT_VQA_METRIC) -> float:
    """Accuracy in [0,1] of one predicted answer against the human answers of one question.

    ``variant``: ``official`` (the VQA challenge's evaluation, default) or ``robustvlm`` (RobustVLM's copy,
    which also normalises every human answer like the prediction); see the module docstring.
    """
    if not human_answers:
        raise ValueError("a VQA question needs at least one human answer")
    answers = normalize_human_answers(human_answers, variant)
    pred = normalize_answer(prediction)
    matches = [a == pred for a in answers]
    total = sum(matches)
    # Leave human i out: the others match (total - matches[i]) times.
    per_subset = [min(1.0, (total - m) / HUMANS_FOR_FULL_CREDIT) for m in matches]
    return sum(per_subset) / len(per_subset)


def mean_vqa_accuracy(predictions: Sequence[str], human_answers: Sequence[Sequence[str]],
                      variant: str = DEFAULT_VQA_METRIC) -> float:
    """Mean accuracy over questions (the official "overall" number, as a fraction rather than a percentage)."""
    if len(predictions) != len(human_answers):
        raise ValueError(f"{len(predictions)} predictions but {len(human_answers)} answer sets")
    scores = [vqa_accuracy(p, a, variant) for p, a in zip(predictions, human_answers, strict=True)]
    return sum(scores) / len(scores) if scores else float("nan")
