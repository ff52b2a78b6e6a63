"""Training objectives: a contract every registered objective meets, and each one's definition."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simclip_bench.errors import UserError
from simclip_bench.train.inner_attack import training_pgd
from simclip_bench.train.objectives import (
    OBJECTIVES,
    TECOA_TEMPLATE,
    FareObjective,
    SimClipObjective,
    TecoaObjective,
    default_attack_loss,
    former_attack_loss,
    get_objective,
    neg_cosine,
)

CLASSES = ("circle", "square", "star")


def _encoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8))


def _fake_text(texts):
    g = torch.Generator().manual_seed(len(texts[0]))
    return torch.randn(len(texts), 8, generator=g)


def _prepared(name: str, **options):
    obj = get_objective(name, **options)
    obj.setup(_fake_text, CLASSES)
    return obj


def _batch(n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, len(CLASSES), (n,), generator=g)


VARIANTS = [("simclip", {}), ("simclip", {"anchor_weight": 0.5}), ("simclip", {"predictor": True}),
            ("simclip-anchored", {}), ("simclip-anchored", {"attack_loss": "cosine"}), ("fare", {}),
            ("fare", {"attack_loss": "cosine"}), ("tecoa", {})]


def test_every_objective_is_registered_and_covered_by_the_contract():
    assert set(OBJECTIVES) == {name for name, _ in VARIANTS}


@pytest.mark.parametrize("name, options", VARIANTS)
def test_inner_pgd_increases_the_objectives_own_attack_loss(name, options):
    enc, orig = _encoder(0), _encoder(1)
    obj = _prepared(name, **options)
    x, y = _batch()
    views = obj.views(enc, orig, x, y)

    def attack(x_adv, idx):
        loss = obj.attack_loss(enc(x_adv), views, idx)
        return loss, torch.zeros_like(loss, dtype=torch.bool)

    positions = torch.arange(len(x))
    start = training_pgd(attack, x, 8 / 255, n_iter=0, step_size=1 / 255, seed=0, step=0, positions=positions)
    end = training_pgd(attack, x, 8 / 255, n_iter=10, step_size=1 / 255, seed=0, step=0, positions=positions)
    assert (end - x).abs().max() <= 8 / 255 + 1e-6 and end.min() >= 0 and end.max() <= 1
    idx = torch.arange(len(x))
    assert obj.attack_loss(enc(end), views, idx).mean() > obj.attack_loss(enc(start), views, idx).mean()


@pytest.mark.parametrize("name, options", VARIANTS)
def test_outer_loss_trains_the_encoder_and_never_the_frozen_original(name, options):
    enc, orig = _encoder(0), _encoder(1)
    obj = _prepared(name, **options)
    predictor = obj.predictor(8)
    x, y = _batch()
    x_adv = (x + 0.01).clamp(0, 1)
    views = obj.views(enc, orig, x, y)
    z = enc(obj.loss_inputs(x, x_adv))
    loss, report = obj.loss(z, predictor(z) if predictor is not None else None, views)
    loss.backward()
    assert enc[1].weight.grad.abs().sum() > 0
    assert orig[1].weight.grad is None
    assert report["loss"] == pytest.approx(float(loss.detach()))


def test_fare_loss_is_squared_l2_summed_over_dims_and_averaged_over_the_batch():
    enc, orig = _encoder(0), _encoder(1)
    x, _ = _batch()
    x_adv = (x + 0.02).clamp(0, 1)
    obj = FareObjective()
    loss, _ = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, obj.views(enc, orig, x, None))
    expected = ((enc(x_adv) - orig(x)) ** 2).sum(dim=1).mean()
    assert torch.allclose(loss, expected)


def test_tecoa_is_cross_entropy_of_100_cosine_logits_against_template_texts():
    enc = _encoder(0)
    x, y = _batch()
    seen = []

    def encode_text(texts):
        seen.extend(texts)
        return _fake_text(texts)

    obj = TecoaObjective()
    obj.setup(encode_text, CLASSES)
    assert seen == [TECOA_TEMPLATE.format(c) for c in CLASSES]
    loss, _ = obj.loss(enc(x), None, obj.views(enc, None, x, y))
    text = F.normalize(_fake_text(seen), dim=-1)
    expected = F.cross_entropy(100 * F.normalize(enc(x), dim=-1) @ text.T, y)
    assert torch.allclose(loss, expected)


def test_tecoa_refuses_unlabelled_data():
    obj = TecoaObjective()
    with pytest.raises(UserError, match="class names"):
        obj.setup(_fake_text, None)
    obj.setup(_fake_text, CLASSES)
    x, _ = _batch()
    with pytest.raises(UserError, match="label"):
        obj.views(_encoder(), None, x, torch.full((len(x),), -1))


def test_anchor_weight_adds_lambda_times_the_anchored_term_to_the_paper_loss():
    enc, orig = _encoder(0), _encoder(1)
    x, _ = _batch()
    x_adv = (x + 0.02).clamp(0, 1)
    paper, blend = SimClipObjective(), SimClipObjective(anchor_weight=0.3)
    z = enc(torch.cat([x, x_adv]))
    base, _ = paper.loss(z, None, paper.views(enc, orig, x, None))
    mixed, report = blend.loss(z, None, blend.views(enc, orig, x, None))
    anchor_term = neg_cosine(enc(x_adv), orig(x)).mean()
    assert torch.allclose(mixed, base + 0.3 * anchor_term)
    assert blend.needs_original and not paper.needs_original and "cos_adv_anchor" in report


def test_predictor_head_is_what_the_loss_pulls_and_the_paper_loss_without_it_differs():
    enc = _encoder(0)
    x, _ = _batch()
    x_adv = (x + 0.02).clamp(0, 1)
    obj = SimClipObjective(predictor=True)
    head = obj.predictor(8)
    z = enc(torch.cat([x, x_adv]))
    with_head, _ = obj.loss(z, head(z), obj.views(enc, None, x, None))
    without, _ = obj.loss(z, None, obj.views(enc, None, x, None))
    with_head.backward()
    assert head[0].weight.grad.abs().sum() > 0
    assert not torch.allclose(with_head, without)


def test_simclip_anchored_attacks_with_the_squared_l2_distance_to_the_original_by_default():
    """The released Sim-CLIP script runs ``--attack_loss l2`` on unnormalised embeddings: sum over dims."""
    enc, orig = _encoder(0), _encoder(1)
    x, _ = _batch()
    x_adv = (x + 0.02).clamp(0, 1)
    obj = get_objective("simclip-anchored")
    views = obj.views(enc, orig, x, None)
    idx = torch.tensor([4, 0, 2])
    expected = ((enc(x_adv[idx]) - orig(x)[idx]) ** 2).sum(dim=1)
    assert obj.attack_loss_name == "l2"
    assert torch.allclose(obj.attack_loss(enc(x_adv[idx]), views, idx), expected)


def test_simclip_anchored_attacks_with_minus_cosine_when_asked_and_its_outer_loss_is_cosine_either_way():
    enc, orig = _encoder(0), _encoder(1)
    x, _ = _batch()
    x_adv = (x + 0.02).clamp(0, 1)
    l2, cosine = get_objective("simclip-anchored"), get_objective("simclip-anchored", attack_loss="cosine")
    views = cosine.views(enc, orig, x, None)
    idx = torch.arange(len(x))
    expected = -F.cosine_similarity(enc(x_adv), orig(x), dim=-1)
    assert torch.allclose(cosine.attack_loss(enc(x_adv), views, idx), expected)
    assert not torch.allclose(l2.attack_loss(enc(x_adv), views, idx), expected)
    for obj in (l2, cosine):
        loss, _ = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, views)
        assert torch.allclose(loss, expected.mean())


def test_each_objective_attacks_by_default_as_its_reference_does():
    assert {name: default_attack_loss(name) for name in OBJECTIVES} == {
        "simclip": "cosine", "simclip-anchored": "l2", "fare": "l2", "tecoa": "ce"}


def test_runs_saved_before_the_setting_keep_the_loss_they_were_attacked_with():
    assert {name: former_attack_loss(name) for name in OBJECTIVES} == {
        "simclip": "cosine", "simclip-anchored": "cosine", "fare": "l2", "tecoa": "ce"}


@pytest.mark.parametrize("name, options, message", [
    ("fare", {"anchor_weight": 0.5}, "--anchor-weight applies to --objective simclip only"),
    ("tecoa", {"predictor": True}, "--predictor applies to --objective simclip only"),
    ("simclip", {"anchor_weight": -1.0}, "--anchor-weight must be"),
    ("farre", {}, "did you mean 'fare'"),
    ("simclip-anchored", {"attack_loss": "cosin"}, "did you mean 'cosine'"),
    ("simclip-anchored", {"attack_loss": "ce"}, "--attack-loss ce does not go with --objective simclip-anchored"),
    ("simclip", {"attack_loss": "l2"}, "--attack-loss l2 does not go with --objective simclip; it attacks with "
                                       "cosine"),
    ("tecoa", {"attack_loss": "cosine"}, "it attacks with ce"),
    ("fare", {"attack_loss": "ce"}, "it attacks with l2 or cosine"),
])
def test_bad_objective_options_are_refused(name, options, message):
    with pytest.raises(UserError, match=message):
        get_objective(name, **options)
