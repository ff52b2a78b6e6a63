"""Square Attack: black-box, inside the ball and the box, reproducible, batch-invariant, and immune to gradient masking.

Every test builds its own tiny fixed-seed linear classifier on 3x8x8 images, so nothing here needs
the network, a GPU or more than a few hundred queries.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simclip_bench.attacks.base import ClassifierObjective, check_perturbation, loss_and_grad, margin_loss
from simclip_bench.attacks.rng import sample_seeds
from simclip_bench.attacks.square import p_schedule, square_attack, square_side

SHAPE = (3, 8, 8)
N_CLASSES = 10
EPS = {"linf": 16 / 255, "l2": 1.0}
N_QUERIES = 300


def _linear_classifier(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    d = math.prod(SHAPE)
    linear = nn.Linear(d, N_CLASSES)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(N_CLASSES, d, generator=g) / math.sqrt(d))
        linear.bias.zero_()
    return nn.Sequential(nn.Flatten(), linear).eval()


class _Quantise(nn.Module):
    """Snap pixels to multiples of 1/4: a non-differentiable preprocessing whose gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


def _confident_batch(model: nn.Module, n: int, min_margin: float = 0.3,
                     seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images the model classifies with a margin of at least ``min_margin``, and those labels."""
    x = torch.rand(40 * n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(-1)
    confident = -margin_loss(logits, y) > min_margin
    assert int(confident.sum()) >= n
    return x[confident][:n], y[confident][:n]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _linear_classifier()


@pytest.fixture(scope="module")
def batch(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = _confident_batch(model, 24)
    return x, y, torch.arange(len(x))


def _attack(model, x, y, idx, norm="linf", n_queries=N_QUERIES, seed=0, objective=None):
    objective = objective or ClassifierObjective(model, y, loss="margin")
    return square_attack(objective, x, idx, EPS[norm], sample_seeds(seed, idx), norm=norm, n_queries=n_queries)


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_example_is_inside_the_ball_and_the_box(model, batch, norm):
    x, y, idx = batch
    # Half the images are saturated at 0 and 1, where only clipping keeps the perturbation in the box.
    x = torch.cat([x[:12], torch.round(x[12:])])
    with torch.no_grad():
        y = model(x).argmax(-1)
    result = _attack(model, x, y, idx, norm)
    check_perturbation(result.x_adv, x, EPS[norm], norm)


def test_same_seeds_give_identical_results(model, batch):
    x, y, idx = batch
    first, second = _attack(model, x, y, idx), _attack(model, x, y, idx)
    assert torch.equal(first.x_adv, second.x_adv)
    assert torch.equal(first.success, second.success)
    assert torch.equal(first.loss, second.loss)


def test_different_seeds_give_different_examples(model, batch):
    x, y, idx = batch
    assert not torch.equal(_attack(model, x, y, idx, seed=0).x_adv, _attack(model, x, y, idx, seed=1).x_adv)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_outcome_of_a_sample_does_not_depend_on_its_batch(model, batch, norm):
    x, y, idx = batch
    x, idx = x[:12], idx[:12]  # few samples: the batches of 1 run one after another
    objective = ClassifierObjective(model, y, loss="margin")  # labels looked up by global index
    whole = _attack(model, x, y, idx, norm, n_queries=150, objective=objective)
    assert 0 < int(whole.success.sum()) < len(x), "need fooled and unfooled samples to exercise the working set"
    for size in (1, 7):
        parts = [_attack(model, x[s:s + size], y, idx[s:s + size], norm, n_queries=150, objective=objective)
                 for s in range(0, len(x), size)]
        assert torch.equal(torch.cat([p.success for p in parts]), whole.success)
        assert torch.equal(torch.cat([p.x_adv for p in parts]), whole.x_adv)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_lowers_the_accuracy_of_the_model(model, batch, norm):
    x, y, idx = batch
    result = _attack(model, x, y, idx, norm, n_queries=500)
    assert _accuracy(model, x, y) == 1.0
    assert _accuracy(model, result.x_adv, y) <= 0.5
    # the success flags are the model's verdict at the returned points
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(-1) != y)


def test_fools_a_gradient_masked_model_whose_input_gradient_is_zero():
    masked = nn.Sequential(_Quantise(), _linear_classifier()).eval()
    x, y = _confident_batch(masked, 16, min_margin=0.1)
    idx = torch.arange(len(x))
    objective = ClassifierObjective(masked, y, loss="margin")
    # What a gradient-based attack (PGD, APGD, FGSM) sees: nothing to follow.
    _, _, grad = loss_and_grad(objective, x, idx)
    assert torch.count_nonzero(grad) == 0
    result = _attack(masked, x, y, idx, "linf", n_queries=500, objective=objective)
    check_perturbation(result.x_adv, x, EPS["linf"], "linf")
    assert _accuracy(masked, x, y) == 1.0
    assert _accuracy(masked, result.x_adv, y) <= 0.5


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise AssertionError("Square is black-box: it must never backpropagate")


class _ForwardOnly(nn.Module):
    """Counts forward calls, records whether autograd could have tracked any, and raises on backward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.tracked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.tracked |= torch.is_grad_enabled() or x.requires_grad
        return self.model(_NoBackward.apply(x))


def test_only_runs_forward_passes_without_autograd(model, batch):
    x, y, idx = batch
    wrapped = _ForwardOnly(model)
    _attack(wrapped, x, y, idx, n_queries=50)
    assert wrapped.calls > 0
    assert not wrapped.tracked


class _QueryCounter:
    """Wraps an objective; counts queries per global index and notes the query at which each was first fooled."""

    def __init__(self, objective: ClassifierObjective, n: int) -> None:
        self.objective = objective
        self.queries = torch.zeros(n, dtype=torch.long)
        self.fooled_at = torch.full((n,), -1, dtype=torch.long)
        self.batch_sizes: list[int] = []

    def __call__(self, x_adv: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert len(idx.unique()) == len(idx), "one query per sample per call"
        loss, success = self.objective(x_adv, idx)
        self.queries[idx] += 1
        first = success & (self.fooled_at[idx] < 0)
        self.fooled_at[idx[first]] = self.queries[idx[first]]
        self.batch_sizes.append(len(idx))
        return loss, success


def test_queries_stop_at_the_budget_and_at_success(model, batch):
    x, y, idx = batch
    counter = _QueryCounter(ClassifierObjective(model, y, loss="margin"), len(x))
    result = _attack(model, x, y, idx, n_queries=200, objective=counter)
    assert 0 < int(result.success.sum()) < len(x)
    # the initialisation is the first query; unfooled samples spend exactly the budget
    assert torch.all(counter.queries[~result.success] == 200)
    # a fooled sample is never queried again, so it leaves the working batch
    assert torch.equal(counter.queries[result.success], counter.fooled_at[result.success])
    assert counter.batch_sizes[0] == len(x)
    assert counter.batch_sizes[-1] == int((~result.success).sum())
    assert counter.batch_sizes == sorted(counter.batch_sizes, reverse=True)


def test_reported_loss_is_the_loss_at_the_returned_point_when_not_fooled(model, batch):
    x, y, idx = batch
    objective = ClassifierObjective(model, y, loss="margin")
    result = _attack(model, x, y, idx, n_queries=200, objective=objective)
    loss_at_x_adv, _ = objective(result.x_adv, idx)
    unfooled = ~result.success
    assert unfooled.any()
    assert torch.allclose(result.loss[unfooled], loss_at_x_adv[unfooled], atol=1e-5)
    assert torch.all(result.loss[unfooled] <= 0)


def test_a_one_query_budget_returns_the_vertical_stripes_initialisation(model, batch):
    x, y, idx = batch
    x = x.clamp(0.2, 0.8)  # no clipping, so every pixel moves by exactly eps
    result = _attack(model, x, y, idx, "linf", n_queries=1)
    delta = result.x_adv - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, EPS["linf"]), atol=1e-6)
    # one sign per (sample, channel, column): every row is the same
    assert torch.equal(delta.sign(), delta[:, :, :1, :].sign().expand_as(delta))


def test_p_schedule_halves_p_after_the_reference_iterations():
    thresholds = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
    assert p_schedule(0) == p_schedule(10) == 0.8
    for k, t in enumerate(thresholds, start=1):
        assert p_schedule(t + 1) == pytest.approx(0.8 / 2**k)
        assert p_schedule(t) == pytest.approx(0.8 / 2 ** (k - 1))
    assert p_schedule(10**6) == pytest.approx(0.8 / 512)


def test_linf_square_side_is_sqrt_of_p_times_pixels_clamped_below_the_image_side():
    assert square_side(0.8, (3, 16, 16)) == 14  # round(sqrt(0.8 * 256))
    assert square_side(1.0, (3, 8, 8)) == 7  # at most H - 1, so the window can move
    assert square_side(0.8 / 512, (3, 8, 8)) == 1  # at least one pixel
    assert square_side(0.8 / 512, (3, 224, 224)) == 9


def test_unknown_norm_is_rejected(model, batch):
    x, y, idx = batch
    with pytest.raises(ValueError, match="norm"):
        square_attack(ClassifierObjective(model, y, loss="margin"), x, idx, 0.1, sample_seeds(0, idx), norm="l1")
