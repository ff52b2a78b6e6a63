"""APGD and PGD: stronger than nothing, inside the eps-ball and the [0,1] box, reproducible."""
import pytest
import torch

from simclip_bench.attacks.apgd import apgd_linf, checkpoint_schedule
from simclip_bench.attacks.base import (
    ClassifierObjective,
    PerturbationOutOfBounds,
    check_linf_perturbation,
)
from simclip_bench.attacks.pgd import pgd_linf

EPS = 4 / 255


@pytest.fixture(scope="module")
def batch(shapes_test, zero_shot_head):
    x, y = shapes_test.tensors(list(range(64)))
    with torch.no_grad():
        correct = zero_shot_head(x).argmax(-1) == y
    return x[correct], y[correct]


def _accuracy(head, x, y):
    with torch.no_grad():
        return (head(x).argmax(-1) == y).float().mean().item()


def test_reference_checkpoints_for_100_iterations():
    # p_0 = 0, p_1 = 0.22, interval shrinks by 0.03 down to 0.06 (Croce & Hein 2020, Sec. 3.2)
    assert [i + 1 for i, _ in checkpoint_schedule(100)] == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_lowers_accuracy_of_the_tiny_model(batch, zero_shot_head):
    x, y = batch
    result = apgd_linf(ClassifierObjective(zero_shot_head, y), x, EPS, n_iter=20,
                       generator=torch.Generator().manual_seed(0))
    assert _accuracy(zero_shot_head, x, y) == 1.0
    assert _accuracy(zero_shot_head, result.x_adv, y) < 0.5
    # success flags agree with a fresh float32 prediction
    assert torch.equal(result.success, zero_shot_head(result.x_adv).argmax(-1) != y)


def test_apgd_stays_in_ball_and_box(batch, zero_shot_head):
    x, y = batch
    result = apgd_linf(ClassifierObjective(zero_shot_head, y), x, EPS, n_iter=10)
    norms = check_linf_perturbation(result.x_adv, x, EPS)
    assert norms.max() <= EPS + 1e-6
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_apgd_is_stronger_than_random_noise(batch, zero_shot_head):
    x, y = batch
    noise = torch.clamp(x + EPS * torch.sign(torch.randn_like(x)), 0, 1)
    adv = apgd_linf(ClassifierObjective(zero_shot_head, y), x, EPS, n_iter=20).x_adv
    assert _accuracy(zero_shot_head, adv, y) < _accuracy(zero_shot_head, noise, y)


def test_same_seed_same_adversarial_examples(batch, zero_shot_head):
    x, y = batch
    runs = [apgd_linf(ClassifierObjective(zero_shot_head, y[:8]), x[:8], EPS, n_iter=5,
                      generator=torch.Generator().manual_seed(3)).x_adv for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_pgd_stays_in_ball_and_box(batch, zero_shot_head):
    x, y = batch
    adv = pgd_linf(ClassifierObjective(zero_shot_head, y), x, EPS, n_iter=5).x_adv
    check_linf_perturbation(adv, x, EPS)


def test_out_of_ball_output_is_caught():
    x = torch.full((1, 3, 4, 4), 0.5)
    with pytest.raises(PerturbationOutOfBounds):
        check_linf_perturbation(x + 2 * EPS, x, EPS)
    with pytest.raises(PerturbationOutOfBounds):
        check_linf_perturbation(torch.full_like(x, 1.01), torch.ones_like(x), EPS)
