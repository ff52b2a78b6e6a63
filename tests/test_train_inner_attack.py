"""The inner PGD of training takes the steps of RobustVLM's ``train/pgd_train.py``, from the same start.

The reference is restated below, independently and in its own form (the perturbation is the state; the
loss is the batch mean, as its caller reduces it for PGD), and our ``training_pgd`` must end at the same
images. The encoders are chosen so that what distinguishes the reference is exercised: images with
saturated pixels (the start leaves [0,1]), pixels whose gradient becomes exactly zero during the attack
(where momentum and plain sign steps part), and gradients with NaN entries.
"""
from __future__ import annotations

import pytest
import torch

from simclip_bench.train.inner_attack import check_momentum, start_perturbation, training_pgd

EPS, STEP, ITERATIONS, SEED, TRAIN_STEP = 4 / 255, 1 / 255, 10, 3, 7


def reference_pgd(embed, target, x, delta, eps, iterations, stepsize, momentum):
    """RobustVLM's PGD (mode 'max', l-inf) as its paper code runs it, restated for the test."""
    velocity = torch.zeros_like(x)
    for _ in range(iterations):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = ((embed(x + delta) - target) ** 2).sum(dim=1).mean()
            g = torch.autograd.grad(loss, delta)[0].detach()
        g[g.isnan()] = 0.0
        velocity = momentum * velocity + g.sign()
        velocity = velocity.sign()
        delta = (delta.detach() + stepsize * velocity).clamp(-eps, eps)
        delta = (x + delta).clamp(0.0, 1.0) - x
    return x + delta


class ConvEncoder(torch.nn.Module):
    """A small random conv net: no zero gradients by design."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                                       torch.nn.Linear(4 * 8 * 8, 6))

    def forward(self, x):
        return self.net(x)


class GatedEncoder(torch.nn.Module):
    """Each pixel enters through ``relu(x - 0.5)``: its gradient is exactly 0 once the attack pushes it below 0.5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(3 * 8 * 8, 6)

    def forward(self, x):
        return self.linear(torch.relu(x - 0.5).flatten(1))


class NanGradEncoder(GatedEncoder):
    """``sqrt(x - 0.5)`` where ``x > 0.5``, else 0: a finite output whose gradient is NaN below 0.5."""

    def forward(self, x):
        return self.linear(torch.where(x > 0.5, torch.sqrt(x - 0.5), torch.zeros_like(x)).flatten(1))


def _images(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    if kind == "conv":  # a third of the rows black, a third white: the random start leaves [0,1] there
        x = torch.rand(4, 3, 8, 8, generator=g)
        x[:, :, :3] = 0.0
        x[:, :, -3:] = 1.0
        return x
    return 0.5 + EPS * (2 * torch.rand(4, 3, 8, 8, generator=g) - 1)  # pixels cross the 0.5 gate


ENCODERS = {"conv": ConvEncoder, "gated": GatedEncoder, "nan-grad": NanGradEncoder}


def _ours(kind: str, momentum: float, iterations: int = ITERATIONS) -> torch.Tensor:
    encoder, x = ENCODERS[kind](), _images(kind)
    target = torch.randn(len(x), 6, generator=torch.Generator().manual_seed(9))

    def objective(x_adv, idx):
        loss = ((encoder(x_adv) - target[idx]) ** 2).sum(dim=1)
        return loss, torch.zeros_like(loss, dtype=torch.bool)

    return training_pgd(objective, x, EPS, iterations, STEP, SEED, TRAIN_STEP, torch.arange(len(x)),
                        momentum=momentum)


def _reference(kind: str, momentum: float, iterations: int = ITERATIONS) -> torch.Tensor:
    encoder, x = ENCODERS[kind](), _images(kind)
    target = torch.randn(len(x), 6, generator=torch.Generator().manual_seed(9))
    delta = start_perturbation(x, EPS, SEED, TRAIN_STEP, torch.arange(len(x)))
    return reference_pgd(encoder, target, x, delta, EPS, iterations, STEP, momentum)


# 10 iterations as in training; 2 as well, since 10 steps of 1/255 saturate a pixel pushed one way from any
# start in a 4/255 ball, which would hide a start that differs from the reference's.
@pytest.mark.parametrize("iterations", [ITERATIONS, 2])
@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("kind", list(ENCODERS))
def test_training_pgd_ends_where_the_reference_pgd_ends(kind, momentum, iterations):
    ours, reference = _ours(kind, momentum, iterations), _reference(kind, momentum, iterations)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, reference, rtol=0, atol=1e-6), (ours - reference).abs().max()


def test_nan_gradient_entries_are_zeroed_even_where_the_sign_would_keep_them(monkeypatch):
    """torch.sign(nan) is 0 in current torch, which would hide a missing NaN -> 0; a NaN-keeping sign shows it."""
    from simclip_bench.train import inner_attack

    def sign_keeping_nan(t, norm):
        return torch.where(t == 0, torch.zeros_like(t), t / t.abs())

    monkeypatch.setattr(inner_attack, "normalized_step", sign_keeping_nan)
    ours, reference = _ours("nan-grad", 0.9), _reference("nan-grad", 0.9)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, reference, rtol=0, atol=1e-6)


def test_on_the_gated_encoder_momentum_and_plain_sign_steps_end_apart():
    """Guards the equivalence test: there, dropping the momentum would be seen (pixels a whole step or more apart)."""
    with_momentum, plain = _reference("gated", 0.9), _reference("gated", 0.0)
    assert (with_momentum - plain).abs().max() >= STEP - 1e-6
    assert ((with_momentum - plain).abs() > 1e-6).sum() >= 10


def test_the_start_leaves_the_box_on_saturated_pixels_as_the_reference_draws_it():
    """Guards the equivalence test: on the conv images the start is outside [0,1] somewhere."""
    x = _images("conv")
    start = x + start_perturbation(x, EPS, SEED, TRAIN_STEP, torch.arange(len(x)))
    assert (start < 0).any() and (start > 1).any()


def test_start_is_uniform_in_the_eps_ball_and_depends_only_on_seed_step_and_position():
    x = torch.rand(6, 3, 8, 8)
    delta = start_perturbation(x, EPS, SEED, TRAIN_STEP, torch.arange(6))
    assert delta.abs().max() <= EPS and delta.min() < -0.9 * EPS and delta.max() > 0.9 * EPS
    alone = start_perturbation(x[4:5], EPS, SEED, TRAIN_STEP, torch.tensor([4]))
    assert torch.equal(alone, delta[4:5])
    assert not torch.equal(start_perturbation(x, EPS, SEED, TRAIN_STEP + 1, torch.arange(6)), delta)


@pytest.mark.parametrize("n_iter", [0, 3])
def test_result_is_in_the_ball_and_the_box_even_with_no_iteration(n_iter):
    x = _images("conv")

    def objective(x_adv, idx):
        loss = ((x_adv.flatten(1) - 0.3) ** 2).sum(dim=1)
        return loss, torch.zeros_like(loss, dtype=torch.bool)

    out = training_pgd(objective, x, EPS, n_iter, STEP, SEED, TRAIN_STEP, torch.arange(len(x)))
    assert (out - x).abs().max() <= EPS + 1e-6 and out.min() >= 0 and out.max() <= 1


def _former_pgd(objective, x, eps, n_iter, step_size, delta):
    """simclip-bench's inner PGD before momentum: plain sign steps from the start clipped to [0,1]."""
    def box(z):
        return torch.clamp(torch.minimum(torch.maximum(z, x - eps), x + eps), 0.0, 1.0)

    x_adv = box(x + delta)
    for _ in range(n_iter):
        z = x_adv.detach().requires_grad_(True)
        g = torch.autograd.grad(objective(z, None)[0].sum(), z)[0]
        x_adv = box(x_adv + step_size * g.sign())
    return x_adv


def test_momentum_0_with_a_clipped_start_is_bit_for_bit_the_former_attack():
    """What runs saved before momentum resume with: their trajectories must not move by a single bit."""
    encoder, x = ConvEncoder(), _images("conv")
    target = torch.randn(len(x), 6, generator=torch.Generator().manual_seed(9))

    def objective(x_adv, idx):
        loss = ((encoder(x_adv) - target) ** 2).sum(dim=1)
        return loss, torch.zeros_like(loss, dtype=torch.bool)

    positions = torch.arange(len(x))
    ours = training_pgd(objective, x, EPS, ITERATIONS, STEP, SEED, TRAIN_STEP, positions, momentum=0.0,
                        clip_start=True)
    former = _former_pgd(objective, x, EPS, ITERATIONS, STEP, start_perturbation(x, EPS, SEED, TRAIN_STEP, positions))
    assert torch.equal(ours, former)


@pytest.mark.parametrize("momentum", [1.0, -0.1, float("nan"), float("inf")])
def test_momentum_outside_0_to_1_is_refused(momentum):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_momentum(momentum)
