"""CIDEr-D and VQA accuracy against examples worked out by hand (and CIDEr-D against pycocoevalcap)."""
import math

import pytest

from simclip_bench.metrics.cider import cider_d, cider_d_scores, tokenize
from simclip_bench.metrics.vqa_accuracy import (
    VQA_METRICS,
    mean_vqa_accuracy,
    normalize_answer,
    normalize_human_answers,
    vqa_accuracy,
)

LN2 = math.log(2)


# --- CIDEr-D -----------------------------------------------------------------------------------------

def test_a_perfect_two_word_caption_scores_five():
    # Two images, so IDF = log 2 - log df. "a" is in both images' references: weight 0, it does not count.
    # "cat" and "a cat" have weight log 2 in candidate and reference: cosine 1 for n=1 and n=2, nothing for
    # n=3, 4 (no trigrams), no length penalty. CIDEr-D = 10 * (1 + 1 + 0 + 0) / 4 = 5.
    scores = cider_d_scores(["a cat", "a dog"], [["a cat"], ["a dog"]])
    assert scores == pytest.approx([5.0, 5.0])


def test_clipping_length_penalty_and_averaging_over_references_by_hand():
    # Image 1: candidate "cat cat", references "a cat" and "a red cat"; image 2 as above (5.0).
    # Weights (L = log 2): candidate cat = 2L (tf 2, df 1), bigram "cat cat" = L (df 0 -> log max(1, 0) = 0).
    # vs "a cat": n=1 min(2L, L) * L / (|2L| * |L|) = 1/2; n=2 no shared bigram: 0; same bigram count (1): no penalty.
    # vs "a red cat": n=1 min(2L, L) * L / (2L * sqrt(2) L) = 1/(2 sqrt 2); penalty exp(-(1-2)^2 / 72).
    # CIDEr-D = 10 * mean over refs of (sum over n / 4).
    expected_1 = 10 * ((0.5 / 4) + (1 / (2 * math.sqrt(2)) * math.exp(-1 / 72) / 4)) / 2
    scores = cider_d_scores(["cat cat", "a dog"], [["a cat", "a red cat"], ["a dog"]])
    assert scores[0] == pytest.approx(expected_1)
    assert scores[1] == pytest.approx(5.0)
    assert cider_d(["cat cat", "a dog"], [["a cat", "a red cat"], ["a dog"]]) == pytest.approx((expected_1 + 5) / 2)


def test_an_n_gram_every_image_shares_is_worth_nothing():
    # "a" has df = N: weight log N - log N = 0, so a caption of only shared words scores 0.
    assert cider_d_scores(["a", "a"], [["a cat"], ["a dog"]]) == [0.0, 0.0]


def test_tokenisation_lowercases_and_drops_punctuation_like_the_ptb_step():
    assert tokenize("A Man, riding a (red) Horse.") == ["a", "man", "riding", "a", "red", "horse"]
    assert tokenize("The dog's t-shirt isn't 3.5 sizes!") == ["the", "dog", "'s", "t-shirt", "is", "n't", "3.5",
                                                              "sizes"]
    assert tokenize("'quoted' -- text...") == ["quoted", "text"]


def test_case_and_punctuation_do_not_change_the_score():
    refs = [["a red circle on a plain background."], ["a blue star in the center."]]
    assert cider_d(["A RED circle, on a plain background!"], refs[:1]) == cider_d(
        ["a red circle on a plain background"], refs[:1])


def test_agrees_with_pycocoevalcap_on_generated_captions():
    from pycocoevalcap.cider.cider import Cider  # a declared dependency: missing, this test fails (no skip)

    from simclip_bench.data.shapes import ShapesDataset

    data = ShapesDataset("val", size=30)
    refs = [list(data.sample(i).captions) for i in range(30)]
    # Candidates: for each image, a caption of another image or a shuffled one of its own.
    cands = [refs[(i * 7) % 30][i % 5] if i % 3 else " ".join(reversed(refs[i][0].split())) for i in range(30)]
    gts = {i: [" ".join(tokenize(r)) for r in refs[i]] for i in range(30)}
    res = {i: [" ".join(tokenize(cands[i]))] for i in range(30)}
    reference_score, reference_scores = Cider().compute_score(gts, res)
    assert cider_d_scores(cands, refs) == pytest.approx(list(reference_scores), abs=1e-9)
    assert cider_d(cands, refs) == pytest.approx(reference_score, abs=1e-9)


# --- VQA accuracy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_min_matches_over_three_averaged_over_the_ten_leave_one_out_subsets(matches, expected):
    # k humans said "dog": leaving out one of them, k-1 others match; leaving out another human, k match.
    # accuracy = (k * min((k-1)/3, 1) + (10-k) * min(k/3, 1)) / 10:  k=1: 9*(1/3)/10 = 0.3;
    # k=2: (2/3 + 8*2/3)/10 = 0.6;  k=3: (3*2/3 + 7)/10 = 0.9;  k=4: (4*1 + 6*1)/10 = 1.
    answers = ["dog"] * matches + ["cat", "horse"] * ((10 - matches) // 2) + ["cat"] * ((10 - matches) % 2)
    assert vqa_accuracy("dog", answers) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, normalised", [
    ("Yes.", "yes"),                      # lower-case, trailing period deleted
    ("the dog", "dog"),                   # articles dropped
    ("An apple", "apple"),
    ("Two", "2"),                         # number words become digits
    ("none", "0"),
    ("dont know", "don't know"),          # contractions get their apostrophe back
    ("isnt", "isn't"),
    ("t-shirt", "t shirt"),               # '-' with no space next to it becomes a space
    ("red, blue", "red blue"),            # ',' next to a space is deleted
    ("red,blue", "red blue"),             # ... and otherwise becomes a space
    ("1,000", "1000"),                    # a digit-comma-digit deletes all punctuation
    ("3.5", "3.5"),                       # a period before a digit stays
    ("yes!", "yes"),
    ("  Tennis\tracket\n", "tennis racket"),
])
def test_answer_normalisation_edge_cases(prediction, normalised):
    assert normalize_answer(prediction) == normalised


def test_a_normalised_prediction_matches_normalised_human_answers():
    humans = ["2"] * 4 + ["3"] * 3 + ["4"] * 3
    assert vqa_accuracy("two", humans) == 1.0
    assert vqa_accuracy("Three.", humans) == pytest.approx(0.9)


def test_human_answers_are_only_punctuation_normalised_and_only_when_they_disagree():
    # The official rule: unanimous human answers are compared as written (annotation files are normalised).
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0   # prediction becomes "t shirt"
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0  # now humans become "t shirt" too
    assert vqa_accuracy("the dog", ["the dog"] * 10) == 0.0   # articles are never stripped from human answers


def test_vqa_accuracy_needs_human_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


# --- VQA accuracy: the official and the RobustVLM variant ----------------------------------------------

def test_the_variants_are_official_first_and_robustvlm():
    assert VQA_METRICS == ("official", "robustvlm")
    assert vqa_accuracy("2", ["Two"] * 10) == vqa_accuracy("2", ["Two"] * 10, variant="official")


@pytest.mark.parametrize("prediction, humans, official, robustvlm", [
    # Unanimous humans: official compares them as written; RobustVLM normalises them like the prediction.
    ("2", ["Two"] * 10, 0.0, 1.0),
    ("dog", ["the dog"] * 10, 0.0, 1.0),
    ("t-shirt", ["t-shirt"] * 10, 0.0, 1.0),     # prediction "t shirt"; RobustVLM's humans too
    ("don't know", ["dont know"] * 10, 0.0, 1.0),
    # Disagreeing humans: official strips their punctuation only, so number words, capitals and articles stay.
    ("2", ["two dogs."] * 2 + ["Two"] * 3 + ["2"] * 5, 1.0, 1.0),    # 5 literal "2"s suffice for both
    ("2", ["Two"] * 3 + ["three"] * 7, 0.0, 0.9),                      # 3 humans once normalised
    ("2 dogs", ["two dogs."] * 2 + ["cats"] * 8, 0.0, 0.6),            # "two dogs" -> "2 dogs": 2 humans
    ("Yes.", ["Yes"] * 2 + ["no"] * 8, 0.0, 0.6),                      # capitals are kept by official
])
def test_the_two_variants_differ_exactly_where_the_human_answers_are_not_normalised(prediction, humans, official,
                                                                                      robustvlm):
    assert vqa_accuracy(prediction, humans, variant="official") == pytest.approx(official)
    assert vqa_accuracy(prediction, humans, variant="robustvlm") == pytest.approx(robustvlm)


def test_the_variants_agree_on_normalised_human_answers():
    humans = ["2"] * 4 + ["3"] * 3 + ["4"] * 3
    for prediction in ("two", "Three.", "4", "five"):
        assert vqa_accuracy(prediction, humans, "official") == vqa_accuracy(prediction, humans, "robustvlm")


def test_robustvlm_normalises_every_human_answer_like_the_prediction():
    humans = ["  Two\tdogs! ", "The Cat", "dont", "t-shirt"]
    assert normalize_human_answers(humans, "robustvlm") == ["2 dogs", "cat", "don't", "t shirt"]
    # Official: punctuation only ("!" not next to a space becomes a space, kept at the end, as the reference does).
    assert normalize_human_answers(humans, "official") == ["Two dogs ", "The Cat", "dont", "t shirt"]
    assert normalize_human_answers(["The Cat"] * 3, "official") == ["The Cat"] * 3


def test_the_mean_over_questions_uses_the_variant():
    predictions, humans = ["2", "dog"], [["Two"] * 10, ["dog"] * 10]
    assert mean_vqa_accuracy(predictions, humans) == pytest.approx(0.5)
    assert mean_vqa_accuracy(predictions, humans, variant="robustvlm") == pytest.approx(1.0)


def test_an_unknown_variant_is_refused_not_ignored():
    with pytest.raises(ValueError, match="official, robustvlm"):
        vqa_accuracy("2", ["Two"] * 10, variant="offical")
