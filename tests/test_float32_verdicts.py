"""bf16 decides nothing on its own: every verdict is decided once, in exact float32, on the point that is kept.

* Square, like APGD, stops a sample only on a success its float32 judgement confirms (a bf16 flag alone
  never ends the search, nor counts);
* under reduced precision an iterate within bf16's rounding of the decision boundary is put to the float32
  judgement, so an iterate float32 calls fooled is not lost because bf16 rounded it to the right side;
* a FOOLED verdict needs a margin above the float32 tolerance, so re-evaluating the kept points in any batch
  composition gives every verdict again; the ensemble counts the verdict the attack decided, with its
  prediction, instead of recomputing it in another batch.
"""
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from simclip_bench.attacks import base
from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import (
    BORDERLINE,
    FOOLED,
    NOT_FOOLED,
    ClassifierObjective,
    margin_loss,
    reduced_precision_slack,
    verdict_tolerance,
)
from simclip_bench.attacks.ensemble import logits_of, run_ensemble
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.attacks.rng import sample_seeds
from simclip_bench.attacks.square import square_attack
from simclip_bench.devices import autocast_for

EPS = 4 / 255
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(shapes_test):
    return shapes_test.tensors(list(range(48)))


def _bf16():
    return autocast_for("bf16", CPU)


def _budget(name: str, n: int):
    """``name``'s ensemble with every attack at ``n`` iterations (Square: queries)."""
    spec = resolve_attack(name)
    return replace(spec, attacks=tuple(replace(a, n_iter=n) for a in spec.attacks))


class FlagsEverything(ClassifierObjective):
    """A search whose success flag is raised at every query (a reduced-precision flag gone wrong)."""

    def __call__(self, x_adv, idx):
        loss, _ = super().__call__(x_adv, idx)
        return loss, torch.ones_like(loss, dtype=torch.bool)


def test_square_stops_only_on_a_success_float32_confirms(data, zero_shot_head):
    x, y = data
    idx = torch.arange(len(x))
    result = square_attack(FlagsEverything(zero_shot_head, y, "margin"), x, idx, EPS, sample_seeds(0, idx),
                           n_queries=30)
    codes, preds = ClassifierObjective(zero_shot_head, y).judge(result.x_adv, idx)
    assert torch.equal(result.success, codes > NOT_FOOLED), "a bf16 flag alone ended a sample's search"
    assert 0 < int(result.success.sum()) < len(x)
    assert result.unconfirmed > 0
    assert torch.equal(result.pred[result.success], preds[result.success])


def test_square_under_bf16_counts_only_float32_fooled_samples(data, zero_shot_head):
    x, y = data
    spec = _budget("square", 40)
    out = run_ensemble(spec, zero_shot_head, x, y, EPS, batch_size=16, autocast=_bf16)
    attacked = logits_of(zero_shot_head, x, 64).argmax(-1) == y
    fooled = attacked & ~out.robust
    assert fooled.any()
    margins = margin_loss(logits_of(zero_shot_head, out.x_adv, 64), y)
    assert bool((margins[fooled] > 0).all())


class FavoursClassZeroUnderAutocast(nn.Module):
    """A classifier whose reduced-precision logits favour class 0 by ``bias`` (an error of the size bf16 makes at
    logits of 64-128): an image of class 0 fooled in float32 by less than ``bias`` looks correct to the search."""

    def __init__(self, head: nn.Module, bias: float) -> None:
        super().__init__()
        self.head, self.bias = head, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x).float()
        if torch.is_autocast_enabled(x.device.type):
            logits = logits + self.bias * nn.functional.one_hot(torch.zeros_like(logits[:, 0], dtype=torch.long),
                                                                logits.shape[1])
        return logits


def _boundary_points(head: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor,
                     above: float) -> torch.Tensor:
    """Per sample, a point on the segment from x to target whose float32 margin is positive but below ``above``
    (bisection on the float32 margin; target must be fooled)."""
    lo, hi = torch.zeros(len(x)), torch.ones(len(x))
    for _ in range(40):
        mid = (lo + hi) / 2
        point = x + mid[:, None, None, None] * (target - x)
        m = margin_loss(logits_of(head, point, 64), y)
        fooled = m > 0
        hi = torch.where(fooled, mid, hi)
        lo = torch.where(fooled, lo, mid)
    point = x + hi[:, None, None, None] * (target - x)
    m = margin_loss(logits_of(head, point, 64), y)
    assert bool(((m > 0) & (m < above)).all())
    return point


def test_an_iterate_float32_calls_fooled_is_flagged_although_bf16_rounds_it_to_the_right_side(data, zero_shot_head):
    x, y = data
    ours = y == 0
    x, y = x[ours], y[ours]
    fooled = APGD(8 / 255, n_iter=30, batch_size=32).run(ClassifierObjective(zero_shot_head, y), x,
                                                         torch.arange(len(x)))
    x, y, target = x[fooled.success], y[fooled.success], fooled.x_adv[fooled.success]
    assert len(x) >= 2
    biased = FavoursClassZeroUnderAutocast(zero_shot_head, bias=0.5)
    points = _boundary_points(zero_shot_head, x, y, target, above=0.4)
    idx = torch.arange(len(x))
    with _bf16():
        search_logits = biased(points).float()
        _, flagged = ClassifierObjective(biased, y)(points, idx)
    assert bool((search_logits.argmax(-1) == y).all()), "the search's own argmax calls every point correct"
    assert bool(flagged.all()), "an iterate within bf16's rounding of the boundary was not put to float32"
    assert bool((ClassifierObjective(biased, y).judge(points, idx)[0] > NOT_FOOLED).all())


def test_the_near_boundary_slack_is_a_few_bf16_units_at_the_largest_logit():
    logits = torch.tensor([[70.0, -3.0], [40.0, 1.0], [1.5, 0.2]])
    assert torch.allclose(reduced_precision_slack(logits), torch.tensor([4 * 0.5, 4 * 0.25, 4 * 2.0 ** -7]))
    assert torch.allclose(verdict_tolerance(logits), torch.tensor([0.007, 0.004, 0.00015]))


def test_judge_grades_the_float32_margin(zero_shot_head, data):
    x, y = data
    idx = torch.arange(len(x))
    objective = ClassifierObjective(zero_shot_head, y)
    codes, preds = objective.judge(x, idx)
    logits = logits_of(zero_shot_head, x, 64)
    m = margin_loss(logits, y)
    expected = torch.where(m > verdict_tolerance(logits), FOOLED, torch.where(m > 0, BORDERLINE, NOT_FOOLED))
    assert torch.equal(codes.long(), expected.long()) and torch.equal(preds, logits.argmax(-1))


class NoisyAcrossBatches(nn.Module):
    """Float32 logits that differ with the batch's composition, by up to ``noise`` (what differently blocked
    matrix products do on a GPU): the same point judged in two batches can land on two sides of a boundary."""

    def __init__(self, head: nn.Module, noise: float) -> None:
        super().__init__()
        self.head, self.noise = head, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x).float()
        shift = self.noise * math.sin(2.3 * len(x))  # in [-noise, noise], by batch size
        return logits + shift * torch.linspace(-1, 1, logits.shape[1])


@pytest.mark.parametrize("attack", ["apgd-ce", "square"])
def test_every_verdict_is_given_again_when_the_kept_points_are_reevaluated_in_another_batch(data, zero_shot_head,
                                                                                           attack):
    x, y = data
    noisy = NoisyAcrossBatches(zero_shot_head, noise=0.002)
    spec = _budget(attack, 25 if attack == "apgd-ce" else 300)
    out = run_ensemble(spec, noisy, x, y, 2 / 255 if attack == "apgd-ce" else 4 / 255, batch_size=7)
    attacked = logits_of(noisy, x, 64).argmax(-1) == y
    decided_fooled = attacked & ~out.robust
    assert decided_fooled.sum() >= 3
    for batch in (1, 5, len(x)):
        again = logits_of(noisy, out.x_adv, batch).argmax(-1) != y
        assert torch.equal(again[attacked], decided_fooled[attacked]), f"verdicts flipped at batch size {batch}"
    assert torch.equal(out.adv_pred[decided_fooled], logits_of(noisy, out.x_adv, 1).argmax(-1)[decided_fooled])


def test_a_borderline_point_counts_when_no_clearer_success_is_found(zero_shot_head, data, monkeypatch):
    """With a tolerance no margin can reach, every success is borderline: the samples still count fooled, at
    the borderline point (never weaker than counting any misclassified iterate)."""
    x, y = data
    monkeypatch.setattr(base, "MARGIN_TOLERANCE", 1e9)
    idx = torch.arange(len(x))
    result = APGD(EPS, n_iter=15, batch_size=16).run(ClassifierObjective(zero_shot_head, y), x, idx)
    monkeypatch.undo()
    plain = APGD(EPS, n_iter=15, batch_size=16).run(ClassifierObjective(zero_shot_head, y), x, idx)
    assert result.borderline == int(result.success.sum()) > 0
    assert bool((margin_loss(logits_of(zero_shot_head, result.x_adv, 64), y)[result.success] > 0).all())
    assert bool((result.success >= plain.success).all())


class SaysCorrectAfterTheAttack(nn.Module):
    """The classifier as another batch composition could see it once the attack has decided: after ``lie()``, every
    point it is shown (in order) is predicted as its label, as a borderline point may be elsewhere."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head, self.labels, self.seen = head, None, 0

    def lie(self, labels: torch.Tensor) -> None:
        self.labels, self.seen = labels, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x).float()
        if self.labels is None:
            return logits
        told = self.labels[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return logits + 1000.0 * nn.functional.one_hot(told, logits.shape[1])[:len(x)]


def test_the_ensemble_counts_the_verdict_the_attack_decided_not_a_recomputation(data, zero_shot_head, monkeypatch):
    """A sample the attack decided fooled (in exact float32, in its own batch) counts fooled, with the prediction of
    the forward pass that decided it, whatever another forward pass of its point would say."""
    from simclip_bench.attacks import ensemble

    x, y = data
    model = SaysCorrectAfterTheAttack(zero_shot_head)
    decided = []
    real = ensemble._run_single

    def recording(*args, **kwargs):
        single = real(*args, **kwargs)
        labels, idx = args[3], args[4]
        decided.append((idx.clone(), single.success.clone(), single.pred.clone()))
        model.lie(labels[idx])
        return single

    monkeypatch.setattr(ensemble, "_run_single", recording)
    out = run_ensemble(_budget("apgd-ce", 10), model, x, y, 4 / 255, batch_size=7)
    (idx, success, pred), = decided
    assert int(success.sum()) > 0
    assert bool((~out.robust[idx[success]]).all()), "a success the attack decided was recounted as robust"
    assert torch.equal(out.adv_pred[idx[success]], pred[success])
