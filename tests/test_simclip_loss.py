"""The Sim-CLIP loss: symmetric, stop-gradient, each branch pulled only on its non-stopped side."""
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


def test_paper_objective_trains_the_encoder_through_both_views():
    enc = torch.nn.Linear(6, 4)
    x, x_adv = torch.randn(5, 6), torch.randn(5, 6)
    obj = SimClipObjective()
    views = obj.views(enc, None, x, None)
    loss, report = obj.loss(enc(obj.loss_inputs(x, x_adv)), None, views)
    loss.backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert -1 <= report["loss"] <= 1


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
