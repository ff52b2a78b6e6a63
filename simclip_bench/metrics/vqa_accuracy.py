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


def normalize_answer(text: str) -> str:
    """How the official evaluation normalises a predicted answer."""
    return normalize_words(normalize_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Accuracy in [0,1] of one predicted answer against the human answers of one question."""
    if not human_answers:
        raise ValueError("a VQA question needs at least one human answer")
    pred = normalize_answer(prediction)
    answers = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
    if len(set(answers)) > 1:
        answers = [normalize_punctuation(a) for a in answers]
    matches = [a == pred for a in answers]
    total = sum(matches)
    # Leave human i out: the others match (total - matches[i]) times.
    per_subset = [min(1.0, (total - m) / HUMANS_FOR_FULL_CREDIT) for m in matches]
    return sum(per_subset) / len(per_subset)


def mean_vqa_accuracy(predictions: Sequence[str], human_answers: Sequence[Sequence[str]]) -> float:
    """Mean accuracy over questions (the official "overall" number, as a fraction rather than a percentage)."""
    if len(predictions) != len(human_answers):
        raise ValueError(f"{len(predictions)} predictions but {len(human_answers)} answer sets")
    scores = [vqa_accuracy(p, a) for p, a in zip(predictions, human_answers, strict=True)]
    return sum(scores) / len(scores) if scores else float("nan")
