"""Every registered attack honours the contract: inside the ball and the box, reproducible,
batch-invariant, and it lowers a tiny model's accuracy. Plus APGD's reference schedule."""
import pytest
import torch

from simclip_bench.attacks.apgd import APGD, apgd_attack, checkpoint_schedule
from simclip_bench.attacks.base import (
    ClassifierObjective,
    PerturbationOutOfBounds,
    check_perturbation,
    dlr_loss,
    dlr_targeted_loss,
    margin_loss,
)
from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.pgd import pgd
from simclip_bench.attacks.registry import SINGLE_ATTACKS, AttackSpec, EnsembleSpec

EPS = {"linf": 4 / 255, "l2": 0.5}
FAST_BUDGET = {"apgd": 10, "pgd": 10, "square": 1000}


def fast(spec: AttackSpec, square_queries: int | None = None) -> EnsembleSpec:
    budget = square_queries if spec.kind == "square" and square_queries else FAST_BUDGET[spec.kind]
    quick = AttackSpec(spec.name, spec.kind, spec.loss, budget, min(spec.n_targets, 2), 1)
    return EnsembleSpec(spec.name, (quick,))


@pytest.fixture(scope="module")
def data(shapes_test):
    return shapes_test.tensors(list(range(24)))


def _accuracy(head, x, y):
    with torch.no_grad():
        return (head(x).argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", sorted(SINGLE_ATTACKS))
def test_contract_ball_box_accuracy_drop(name, norm, data, zero_shot_head):
    x, y = data
    out = run_ensemble(fast(SINGLE_ATTACKS[name]), zero_shot_head, x, y, EPS[norm], norm=norm, batch_size=64)
    check_perturbation(out.x_adv, x, EPS[norm], norm)
    assert out.robust.float().mean().item() < _accuracy(zero_shot_head, x, y)


@pytest.mark.parametrize("name", sorted(SINGLE_ATTACKS))
def test_contract_same_seed_same_result(name, data, zero_shot_head):
    x, y = data
    runs = [run_ensemble(fast(SINGLE_ATTACKS[name], square_queries=200), zero_shot_head, x, y, EPS["linf"], seed=5)
            for _ in range(2)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].robust, runs[1].robust)


@pytest.mark.parametrize("name", sorted(SINGLE_ATTACKS))
def test_contract_outcome_does_not_depend_on_batch_size(name, data, zero_shot_head):
    x, y = data
    outcomes = [run_ensemble(fast(SINGLE_ATTACKS[name], square_queries=200), zero_shot_head, x, y, EPS["linf"],
                             batch_size=b) for b in (1, 7, 64)]
    for other in outcomes[1:]:
        assert torch.equal(outcomes[0].robust, other.robust)
        assert outcomes[0].fooled_by == other.fooled_by


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_outcome_does_not_depend_on_how_often_the_batch_is_refilled(norm, data, zero_shot_head):
    """A CPU refills after every iteration, CUDA every 10: the same outcomes either way (the images agree up to
    the float rounding of differently sized batches)."""
    x, y = data
    objective = ClassifierObjective(zero_shot_head, y)
    idx = torch.arange(len(x))
    runs = [APGD(EPS[norm], norm=norm, n_iter=30, batch_size=8, refill_every=r, seed=3).run(objective, x, idx)
            for r in (1, 4, 10)]
    assert 0 < int(runs[0].success.sum()) < len(x), "needs samples fooled at different iterations"
    for other in runs[1:]:
        assert torch.equal(runs[0].success, other.success)
        torch.testing.assert_close(runs[0].loss, other.loss, rtol=1e-2, atol=1e-3)
        assert ((runs[0].x_adv - other.x_adv).abs() > 1e-4).float().mean() < 0.01


def test_reference_checkpoints_for_100_iterations():
    # p_0 = 0, p_1 = 0.22, interval shrinks by 0.03 down to 0.06 (Croce & Hein 2020, Sec. 3.2)
    assert [i + 1 for i, _ in checkpoint_schedule(100)] == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_success_flags_agree_with_a_fresh_prediction(data, zero_shot_head):
    x, y = data
    result = apgd_attack(ClassifierObjective(zero_shot_head, y), x, EPS["linf"], n_iter=20)
    assert torch.equal(result.success, zero_shot_head(result.x_adv).argmax(-1) != y)


def test_apgd_is_stronger_than_random_noise(data, zero_shot_head):
    x, y = data
    noise = torch.clamp(x + EPS["linf"] * torch.sign(torch.randn_like(x)), 0, 1)
    adv = apgd_attack(ClassifierObjective(zero_shot_head, y), x, EPS["linf"], n_iter=20).x_adv
    assert _accuracy(zero_shot_head, adv, y) < _accuracy(zero_shot_head, noise, y)


def test_ensemble_is_the_worst_case_of_its_members(data, zero_shot_head):
    x, y = data
    a = run_ensemble(fast(SINGLE_ATTACKS["apgd-ce"]), zero_shot_head, x, y, EPS["linf"])
    both_specs = (fast(SINGLE_ATTACKS["apgd-ce"]).attacks[0], fast(SINGLE_ATTACKS["apgd-t"]).attacks[0])
    both = run_ensemble(EnsembleSpec("apgd-ce+apgd-t", both_specs), zero_shot_head, x, y, EPS["linf"])
    assert bool((both.robust <= a.robust).all())
    assert {f for f in both.fooled_by if f} <= {"apgd-ce", "apgd-t"}


def test_pgd_accepts_embedding_objectives_through_indices():
    enc = torch.nn.Linear(12, 4)
    target = torch.randn(6, 4)
    from simclip_bench.train.objectives import CosineDistanceObjective

    x = torch.rand(3, 12)
    out = pgd(CosineDistanceObjective(enc, target), x, 0.1, idx=torch.tensor([5, 0, 2]))
    assert (out.x_adv - x).abs().max() <= 0.1 + 1e-6


def test_dlr_losses_match_their_definitions():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-(3.0 - 2.0) / (3.0 - 1.0)]))
    assert torch.allclose(dlr_targeted_loss(z, y, t), torch.tensor([-(3.0 - 2.0) / (3.0 - 0.5 * (1.0 + 0.0))]))
    assert torch.allclose(margin_loss(z, y), torch.tensor([-1.0]))


def test_out_of_ball_output_is_caught():
    x = torch.full((1, 3, 4, 4), 0.5)
    with pytest.raises(PerturbationOutOfBounds):
        check_perturbation(x + 2 * EPS["linf"], x, EPS["linf"])
    with pytest.raises(PerturbationOutOfBounds):
        check_perturbation(x + 0.5, x, 0.5, "l2")
    with pytest.raises(PerturbationOutOfBounds):
        check_perturbation(torch.full_like(x, 1.01), torch.ones_like(x), EPS["linf"])


def test_reported_predictions_are_a_fresh_float32_prediction_at_the_returned_images(data, zero_shot_head):
    x, y = data
    out = run_ensemble(fast(SINGLE_ATTACKS["apgd-ce"]), zero_shot_head, x, y, EPS["linf"])
    with torch.no_grad():
        assert torch.equal(out.adv_pred, zero_shot_head(out.x_adv).argmax(-1))
    assert torch.equal(out.robust, out.adv_pred == y)
