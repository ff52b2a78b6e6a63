"""The Sim-CLIP loss: symmetric, stop-gradient, each branch pulled only on its non-stopped side."""
import pytest
import torch

from simclip_bench.train.objectives import (
    SimClipAnchoredObjective,
    SimClipObjective,
    get_objective,
    neg_cosine,
    simclip_symmetric_loss,
)


def _leaves(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 8, generator=g, requires_grad=True),
            torch.randn(4, 8, generator=g, requires_grad=True))


def test_value_is_minus_cosine_between_views():
    z_clean, z_adv = _leaves()
    expected = -torch.nn.functional.cosine_similarity(z_clean, z_adv, dim=-1).mean()
    assert torch.allclose(simclip_symmetric_loss(z_clean, z_adv), expected)


def test_adversarial_branch_gets_only_the_half_that_stops_the_clean_side():
    z_clean, z_adv = _leaves()
    simclip_symmetric_loss(z_clean, z_adv).backward()
    ref_adv = z_adv.detach().clone().requires_grad_(True)
    (0.5 * neg_cosine(ref_adv, z_clean.detach()).mean()).backward()
    assert torch.allclose(z_adv.grad, ref_adv.grad)


def test_clean_branch_gets_only_the_half_that_stops_the_adversarial_side():
    z_clean, z_adv = _leaves()
    simclip_symmetric_loss(z_clean, z_adv).backward()
    ref_clean = z_clean.detach().clone().requires_grad_(True)
    (0.5 * neg_cosine(ref_clean, z_adv.detach()).mean()).backward()
    assert torch.allclose(z_clean.grad, ref_clean.grad)


def test_without_stop_gradient_the_gradients_would_differ():
    """Guards the two tests above: a loss without stop-gradient gives each side twice the pull."""
    z_clean, z_adv = _leaves()
    simclip_symmetric_loss(z_clean, z_adv).backward()
    a, b = _leaves()
    (-torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()).backward()
    assert torch.allclose(b.grad, 2 * z_adv.grad)


def _paper_objective_setup():
    g = torch.Generator().manual_seed(0)
    enc = torch.nn.Linear(6, 4)
    with torch.no_grad():
        enc.weight.copy_(torch.randn(4, 6, generator=g))
        enc.bias.copy_(torch.randn(4, generator=g))
    return enc, torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)


def _weight_grad(enc, loss):
    enc.zero_grad()
    loss.backward()
    return enc.weight.grad.clone()


def test_paper_objective_value_is_minus_the_cosine_between_the_two_views():
    enc, x, x_adv = _paper_objective_setup()
    obj = SimClipObjective()
    loss, report = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, obj.views(enc, None, x, None))
    with torch.no_grad():  # computed here from the two views, not through the objective's helpers
        za, zc = enc(x_adv), enc(x)
        cos = (za * zc).sum(-1) / (za.norm(dim=-1) * zc.norm(dim=-1))
    expected = float(-cos.mean())
    assert abs(expected) < 0.9  # the views disagree: a loss pinned to -1 (or to 0) would not pass
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    assert report["loss"] == pytest.approx(expected, abs=1e-6)
    assert report["cos_adv_clean"] == pytest.approx(-expected, abs=1e-6)


def test_paper_objective_trains_the_encoder_through_both_views():
    """The gradient is the sum of a pull through the adversarial view (clean side constant) and one through
    the clean view (adversarial side constant), each nonzero: dropping either view changes it."""
    enc, x, x_adv = _paper_objective_setup()
    obj = SimClipObjective()
    loss, _ = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, obj.views(enc, None, x, None))
    grad = _weight_grad(enc, loss)

    def half(pulled, fixed):
        za, zb = enc(pulled), enc(fixed).detach()
        return -0.5 * ((za * zb).sum(-1) / (za.norm(dim=-1) * zb.norm(dim=-1))).mean()

    through_adv = _weight_grad(enc, half(x_adv, x))
    through_clean = _weight_grad(enc, half(x, x_adv))
    assert through_adv.abs().sum() > 1e-3 and through_clean.abs().sum() > 1e-3
    assert torch.allclose(grad, through_adv + through_clean, atol=1e-6)
    assert not torch.allclose(grad, through_adv, atol=1e-4)  # the clean view contributes
    assert not torch.allclose(grad, through_clean, atol=1e-4)  # the adversarial view contributes


def test_anchored_objective_targets_the_frozen_original_on_the_clean_image():
    enc, orig = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    x, x_adv = torch.randn(5, 6), torch.randn(5, 6)
    obj = SimClipAnchoredObjective()
    views = obj.views(enc, orig, x, None)
    assert torch.allclose(views.anchor, orig(x))
    loss, _ = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, views)
    loss.backward()
    assert orig.weight.grad is None
    assert torch.allclose(loss, -torch.nn.functional.cosine_similarity(enc(x_adv), orig(x), dim=-1).mean())


def test_objectives_are_registered_by_name():
    assert get_objective("simclip").name == "simclip"
    assert get_objective("simclip-anchored").needs_original
