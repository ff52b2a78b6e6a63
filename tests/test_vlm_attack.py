"""The captioning/VQA attack protocol on a fake VLM whose behaviour is known exactly.

The fake reads one number from an image, its mean pixel m: it says "red" when m > 0.5, else "blue", and
its language-model loss of "red" falls as m rises (and of "blue" the other way round). An image with m
just above 0.5 can be pushed to "blue" within eps = 4/255; one with m = 0.8 cannot.

The protocol of record is RobustVLM's ``vlm_eval/run_evaluation.py --attack ensemble``: the clean output
counts first; one APGD run per ground truth from the clean image with a first step of 1·eps in float16;
a float32 run from the best point on the text that found it; for VQA, float32 runs towards "Maybe" and
"Word" from the clean image; a sample stops once its score is strictly below the threshold (VQA: 0).
"""
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from simclip_bench.attacks.apgd import APGD
from simclip_bench.tasks import vlm_attack
from simclip_bench.tasks.lm_objective import LanguageModelObjective, TargetStringObjective
from simclip_bench.tasks.vlm_attack import (
    VLMAttackConfig,
    attack_texts,
    attack_vlm,
    stops,
    targeted_string_attack,
    vlm_apgd,
)
from simclip_bench.vlm.base import VisionLanguageModel

EPS = 4 / 255


class MeanPixelVLM(VisionLanguageModel):
    name = "fake"
    image_size = 4

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.seen: list[torch.Tensor] = []  # every image batch the loss was asked about
        self.loss_under_autocast: list[bool] = []
        self.generate_under_autocast: list[bool] = []

    def _m(self, images):
        return images.float().mean(dim=(1, 2, 3))

    def target_scores(self, images, prompts: Sequence[str], targets: Sequence[str]):
        self.seen.append(images.detach().clone())
        self.loss_under_autocast.append(torch.is_autocast_enabled("cpu"))
        m = self._m(images)
        sign = torch.tensor([1.0 if t == "red" else -1.0 for t in targets])
        loss = F.softplus(-sign * (m - self.threshold) * 50)
        said = ["red" if v > self.threshold else "blue" for v in m.tolist()]
        match = torch.tensor([g == t for g, t in zip(said, targets, strict=True)])
        return loss, match

    def generate(self, images, prompts, max_new_tokens=20):
        self.generate_under_autocast.append(torch.is_autocast_enabled("cpu"))
        return ["red" if v > self.threshold else "blue" for v in self._m(images).tolist()]

    def caption_prompt(self):
        return "caption:"

    def vqa_prompt(self, question):
        return question


def images(means):
    return torch.stack([torch.full((3, 4, 4), m) for m in means])


def exact_match(refs):
    return lambda idx, texts: [float(t == refs[i][0]) for i, t in zip(idx, texts, strict=True)]


def run_names(vlm, x, refs, cfg, score=None):
    names = []
    clean = vlm.generate(x, ["p"] * len(x))
    score = score or exact_match(refs)
    attack_vlm(vlm, x, ["p"] * len(x), refs, score, clean, score(list(range(len(x))), clean), cfg,
               on_run_done=names.append)
    return names


def test_untargeted_objective_maximises_the_loss_and_never_reports_success():
    vlm = MeanPixelVLM()
    obj = LanguageModelObjective(vlm, ["p"] * 2, ["red", "red"])
    loss, success = obj(images([0.6, 0.4]), torch.arange(2))
    assert loss[1] > loss[0] and not success.any()


def test_ensemble_targeted_objective_minimises_the_target_loss_and_runs_its_whole_budget():
    vlm = MeanPixelVLM()
    obj = LanguageModelObjective(vlm, ["p"] * 2, ["blue", "blue"], targeted=True)
    loss, success = obj(images([0.6, 0.4]), torch.arange(2))
    assert loss[1] > loss[0] and not success.any()  # the negated loss is maximised; no early stop


def test_target_string_objective_flags_a_greedy_match_and_confirms_it_by_generation():
    vlm = MeanPixelVLM()
    obj = TargetStringObjective(vlm, ["p"] * 2, ["blue", "blue"])
    _, success = obj(images([0.6, 0.4]), torch.arange(2))
    assert success.tolist() == [False, True]
    assert obj.confirm(images([0.6, 0.4]), torch.arange(2)).tolist() == [False, True]


def test_ensemble_keeps_the_worst_case_and_skips_samples_already_at_the_threshold():
    vlm = MeanPixelVLM()
    x = images([0.51, 0.8, 0.2])  # foolable, robust, wrong on the clean image
    refs = [["red"], ["red"], ["red"]]
    score = exact_match(refs)
    clean_texts = vlm.generate(x, ["p"] * 3)
    clean_scores = score([0, 1, 2], clean_texts)
    cfg = VLMAttackConfig(eps=EPS, n_iter=10, stop_below=0.0, batch_size=8)
    out = attack_vlm(vlm, x, ["p"] * 3, refs, score, clean_texts, clean_scores, cfg)
    assert clean_scores == [1.0, 1.0, 0.0]
    assert out.scores == [0.0, 1.0, 0.0]
    assert out.texts == ["blue", "red", "blue"]
    assert out.fooled_by[0] == "apgd-gt1" and out.fooled_by[1:] == ["", ""]
    assert (out.norms <= EPS + 1e-6).all()
    assert torch.equal(out.x_adv[1], x[1]) and torch.equal(out.x_adv[2], x[2])  # no lower score: clean kept
    # The clean-wrong sample (score 0) never reached the loss.
    assert not any(torch.isclose(b.mean(dim=(1, 2, 3)), torch.tensor(0.2), atol=EPS + 1e-3).any() for b in vlm.seen)


def test_ensemble_runs_every_reference_then_a_float32_run_from_the_best_then_the_targets():
    names = run_names(MeanPixelVLM(), images([0.9]), [["red", "red", "red"]],
                      VLMAttackConfig(eps=EPS, n_iter=2, targets=("Maybe", "Word"), batch_size=4))
    assert names == ["apgd-gt1", "apgd-gt2", "apgd-gt3", "apgd-fp32-final", "apgd-target:Maybe", "apgd-target:Word"]


def test_single_protocol_is_one_run_on_the_first_reference():
    names = run_names(MeanPixelVLM(), images([0.9]), [["red", "red"]],
                      VLMAttackConfig(eps=EPS, n_iter=2, protocol="single", targets=("Maybe",)))
    assert names == ["apgd-gt1"]


def _first_batches(vlm, x, refs, cfg, score):
    """The first image each run evaluated (its start point), by run name."""
    starts, count = {}, [0]

    def mark(name):
        starts[name] = vlm.seen[count[0]]
        count[0] = len(vlm.seen)

    clean = vlm.generate(x, ["p"] * len(x))
    attack_vlm(vlm, x, ["p"] * len(x), refs, score, clean, score(list(range(len(x))), clean), cfg, on_run_done=mark)
    return starts


def test_reference_and_target_runs_start_at_the_clean_image_and_the_final_run_at_the_best_point():
    vlm = MeanPixelVLM()
    x = images([0.51])  # the first run flips it to "blue", which scores 0.5: lower, but not low enough to stop
    half_credit = lambda idx, texts: [1.0 if t == "red" else 0.5 for t in texts]  # noqa: E731
    cfg = VLMAttackConfig(eps=EPS, n_iter=3, targets=("Maybe",), batch_size=4, stop_below=0.1)
    starts = _first_batches(vlm, x, [["red", "red"]], cfg, half_credit)
    assert torch.equal(starts["apgd-gt1"], x) and torch.equal(starts["apgd-gt2"], x)
    assert torch.equal(starts["apgd-target:Maybe"], x)
    assert not torch.equal(starts["apgd-fp32-final"], x), "the final run must start at the best point, not clean"
    assert vlm.generate(starts["apgd-fp32-final"], ["p"]) == ["blue"]
    assert (starts["apgd-fp32-final"] - x).abs().max() <= EPS + 1e-6


def test_vlm_apgd_has_robustvlms_settings():
    attack = vlm_apgd(EPS, n_iter=100, batch_size=1, seed=0)
    assert attack.initial_step == 1.0 and attack.random_start is False and attack.n_iter == 100


def test_every_ensemble_run_uses_robustvlms_apgd(monkeypatch):
    made = []
    real = vlm_attack.vlm_apgd
    monkeypatch.setattr(vlm_attack, "vlm_apgd", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    run_names(MeanPixelVLM(), images([0.9]), [["red", "red"]],
              VLMAttackConfig(eps=EPS, n_iter=2, targets=("Maybe",), batch_size=4))
    assert len(made) == 4 and all(a.initial_step == 1.0 and not a.random_start for a in made)


def test_reference_runs_use_the_search_precision_and_the_final_and_targeted_runs_float32():
    vlm = MeanPixelVLM()
    per_run, count = {}, [0]

    def mark(name):
        per_run[name] = set(vlm.loss_under_autocast[count[0]:])
        count[0] = len(vlm.loss_under_autocast)

    x = images([0.9])
    cfg = VLMAttackConfig(eps=EPS, n_iter=2, targets=("Maybe",), batch_size=4, precision="bf16")
    attack_vlm(vlm, x, ["p"], [["red"]], exact_match([["red"]]), ["red"], [1.0], cfg, on_run_done=mark)
    assert per_run == {"apgd-gt1": {True}, "apgd-fp32-final": {False}, "apgd-target:Maybe": {False}}
    assert not any(vlm.generate_under_autocast), "every scored text is generated in float32"


@pytest.mark.parametrize("score, threshold, stopped", [(0.10, 0.10, False), (0.0999, 0.10, True), (0.0, 0.0, True),
                                                       (0.3, 0.0, False)])
def test_a_sample_stops_strictly_below_the_threshold_or_at_zero(score, threshold, stopped):
    assert stops(score, threshold) is stopped


def test_a_sample_at_exactly_the_threshold_is_still_attacked():
    vlm = MeanPixelVLM()
    x = images([0.9])
    names = run_names(vlm, x, [["red"]], VLMAttackConfig(eps=EPS, n_iter=2, stop_below=0.5, batch_size=4),
                      score=lambda idx, texts: [0.5] * len(idx))
    assert names == ["apgd-gt1", "apgd-fp32-final"]


def test_attack_texts_are_the_first_captions_or_the_most_frequent_distinct_answers():
    assert attack_texts(["a", "b", "c"], 2, distinct_by_frequency=False) == ["a", "b"]
    answers = ["no", "yes", "yes", "maybe", "yes", "no"]
    assert attack_texts(answers, 5, distinct_by_frequency=True) == ["yes", "no", "maybe"]


def test_plain_apgd_on_the_fake_flips_a_borderline_caption():
    vlm = MeanPixelVLM()
    x = images([0.51])
    r = APGD(EPS, n_iter=10).run(LanguageModelObjective(vlm, ["p"], ["red"]), x, torch.arange(1))
    assert vlm.generate(r.x_adv, ["p"]) == ["blue"]


class LyingMatchVLM(MeanPixelVLM):
    """Claims a greedy match at every step (like a bf16 teacher-forced check gone wrong), but only generates the
    target once the image really crosses the threshold."""

    def target_scores(self, images, prompts, targets):
        loss, _ = super().target_scores(images, prompts, targets)
        return loss, torch.ones(len(images), dtype=torch.bool)


def test_targeted_string_attack_never_stops_on_an_unconfirmed_match():
    vlm = LyingMatchVLM()
    x = images([0.9])  # cannot reach "blue" within eps: every flag is false
    _, texts, reached = targeted_string_attack(vlm, x, ["p"], "blue", EPS, n_iter=12, batch_size=1)
    assert reached == [False] and texts == ["red"]
    assert len(vlm.seen) == 13, "a rejected flag pauses the sample, it does not end it: start + 12 iterations"


def test_targeted_string_attack_stops_once_generation_shows_the_target():
    vlm = LyingMatchVLM()
    x = images([0.505])
    x_adv, texts, reached = targeted_string_attack(vlm, x, ["p"], "Blue", EPS, n_iter=50, batch_size=1)
    assert reached == [True] and texts == ["blue"]
    assert len(vlm.seen) < 51
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_targeted_string_attack_defaults_are_robustvlms():
    import inspect

    defaults = inspect.signature(targeted_string_attack).parameters
    assert defaults["n_iter"].default == 10_000 and defaults["precision"].default == "fp32"
