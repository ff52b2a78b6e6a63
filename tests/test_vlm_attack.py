"""The captioning/VQA attack protocol on a fake VLM whose behaviour is known exactly.

The fake reads one number from an image, its mean pixel m: it says "red" when m > 0.5, else "blue", and
its language-model loss of "red" falls as m rises (and of "blue" the other way round). An image with m
just above 0.5 can be pushed to "blue" within eps = 4/255; one with m = 0.8 cannot.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from simclip_bench.attacks.apgd import APGD
from simclip_bench.tasks.lm_objective import LanguageModelObjective
from simclip_bench.tasks.vlm_attack import APGDFromStart, VLMAttackConfig, attack_texts, attack_vlm
from simclip_bench.vlm.base import VisionLanguageModel

EPS = 4 / 255


class MeanPixelVLM(VisionLanguageModel):
    name = "fake"
    image_size = 4

    def __init__(self):
        self.seen: list[torch.Tensor] = []  # every image batch the loss was asked about
        self.autocast_enabled: list[bool] = []

    def _m(self, images):
        return images.float().mean(dim=(1, 2, 3))

    def target_scores(self, images, prompts: Sequence[str], targets: Sequence[str]):
        self.seen.append(images.detach().clone())
        m = self._m(images)
        sign = torch.tensor([1.0 if t == "red" else -1.0 for t in targets])
        loss = F.softplus(-sign * (m - 0.5) * 50)
        match = torch.tensor([g == t for g, t in zip(self.generate(images.detach(), prompts), targets, strict=True)])
        return loss, match

    def generate(self, images, prompts, max_new_tokens=20):
        return ["red" if v > 0.5 else "blue" for v in self._m(images).tolist()]

    def caption_prompt(self):
        return "caption:"

    def vqa_prompt(self, question):
        return question


def images(means):
    return torch.stack([torch.full((3, 4, 4), m) for m in means])


def exact_match(vlm, refs):
    return lambda idx, texts: [float(t == refs[i][0]) for i, t in zip(idx, texts, strict=True)]


def test_untargeted_objective_maximises_the_loss_and_never_reports_success():
    vlm = MeanPixelVLM()
    obj = LanguageModelObjective(vlm, ["p"] * 2, ["red", "red"])
    loss, success = obj(images([0.6, 0.4]), torch.arange(2))
    assert loss[1] > loss[0] and not success.any()


def test_targeted_objective_succeeds_when_greedy_output_is_the_target():
    vlm = MeanPixelVLM()
    obj = LanguageModelObjective(vlm, ["p"] * 2, ["blue", "blue"], targeted=True)
    loss, success = obj(images([0.6, 0.4]), torch.arange(2))
    assert success.tolist() == [False, True] and loss[1] > loss[0]  # the negated loss is maximised


def test_ensemble_keeps_the_worst_case_and_skips_samples_already_at_the_threshold():
    vlm = MeanPixelVLM()
    x = images([0.51, 0.8, 0.2])  # foolable, robust, wrong on the clean image
    refs = [["red"], ["red"], ["red"]]
    score = exact_match(vlm, refs)
    clean_texts = vlm.generate(x, ["p"] * 3)
    clean_scores = score([0, 1, 2], clean_texts)
    cfg = VLMAttackConfig(eps=EPS, n_iter=10, stop_at=0.0, batch_size=8)
    out = attack_vlm(vlm, x, ["p"] * 3, refs, score, clean_texts, clean_scores, cfg)
    assert clean_scores == [1.0, 1.0, 0.0]
    assert out.scores == [0.0, 1.0, 0.0]
    assert out.texts == ["blue", "red", "blue"]
    assert out.fooled_by[0] == "apgd-gt1" and out.fooled_by[1:] == ["", ""]
    assert (out.norms <= EPS + 1e-6).all()
    assert torch.equal(out.x_adv[1], x[1]) and torch.equal(out.x_adv[2], x[2])  # no lower score: clean kept
    # The clean-wrong sample (score 0 <= stop_at) never reached the loss.
    assert not any(torch.isclose(b.mean(dim=(1, 2, 3)), torch.tensor(0.2), atol=EPS + 1e-3).any() for b in vlm.seen)


def test_ensemble_runs_every_reference_then_the_targets_then_a_final_run():
    vlm = MeanPixelVLM()
    x = images([0.9])
    refs = [["red", "red", "red"]]
    names = []
    cfg = VLMAttackConfig(eps=EPS, n_iter=2, targets=("Maybe", "Word"), batch_size=4)
    attack_vlm(vlm, x, ["p"], refs, exact_match(vlm, refs), ["red"], [1.0], cfg, on_run_done=names.append)
    assert names == ["apgd-gt1", "apgd-gt2", "apgd-gt3", "apgd-target:Maybe", "apgd-target:Word", "apgd-fp32-final"]


def test_single_protocol_is_one_run_on_the_first_reference():
    vlm = MeanPixelVLM()
    names = []
    cfg = VLMAttackConfig(eps=EPS, n_iter=2, protocol="single", targets=("Maybe",))
    attack_vlm(vlm, images([0.9]), ["p"], [["red", "red"]], exact_match(vlm, [["red"]]), ["red"], [1.0], cfg,
               on_run_done=names.append)
    assert names == ["apgd-gt1"]


def test_apgd_from_start_begins_at_the_given_point_inside_the_ball():
    vlm = MeanPixelVLM()
    x = images([0.9, 0.7])
    start = (x - EPS).clamp(0, 1)
    APGDFromStart(start, EPS, n_iter=1, batch_size=2).run(LanguageModelObjective(vlm, ["p"] * 2, ["red"] * 2), x,
                                                          torch.arange(2))
    assert any(torch.equal(b, start) for b in vlm.seen)


def test_attack_texts_are_the_first_captions_or_the_most_frequent_distinct_answers():
    assert attack_texts(["a", "b", "c"], 2, distinct_by_frequency=False) == ["a", "b"]
    answers = ["no", "yes", "yes", "maybe", "yes", "no"]
    assert attack_texts(answers, 5, distinct_by_frequency=True) == ["yes", "no", "maybe"]


def test_plain_apgd_on_the_fake_flips_a_borderline_caption():
    vlm = MeanPixelVLM()
    x = images([0.51])
    r = APGD(EPS, n_iter=10).run(LanguageModelObjective(vlm, ["p"], ["red"]), x, torch.arange(1))
    assert vlm.generate(r.x_adv, ["p"]) == ["blue"]
