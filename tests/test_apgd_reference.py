"""Our APGD is the reference's APGD (fra31/auto-attack as packaged in pyautoattack), step for step.

Given the same start point and with early stopping off, one run of ours ends at the reference's best
point with the reference's best loss, bit for bit, for CE, DLR and targeted DLR, l-inf and l2, at 100 and 20
iterations. That pins the first step size (2·eps), the momentum (0.75, none on the first step), the
step-size checkpoints and their halving rule, and the restart from the best point after a halving:
breaking any one of them moves the trajectory. The APGD-T target order is pinned against the
reference's own rule.
"""
import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import ClassifierObjective, random_start
from simclip_bench.attacks.ensemble import apgd_t_targets
from simclip_bench.attacks.rng import sample_seeds

EPS = {"linf": 4 / 255, "l2": 0.5}
REFERENCE_NORM = {"linf": "Linf", "l2": "L2"}
N = 16


@pytest.fixture(scope="module")
def batch(shapes_test, zero_shot_head):
    x, y = shapes_test.tensors(list(range(N)))
    with torch.no_grad():
        clean_logits = zero_shot_head(x)
    return x, y, clean_logits


def _reference_single_run(head, x, y, loss, norm, n_iter, start, targets):
    common = {"n_iter": n_iter, "norm": REFERENCE_NORM[norm], "eps": EPS[norm], "seed": 0, "device": "cpu",
              "n_restarts": 1}
    ref = APGDAttack_targeted(head, **common) if loss == "dlr-targeted" else APGDAttack(head, loss=loss, **common)
    ref.init_hyperparam(x)
    ref.y_target = targets
    x_best, robust, loss_best, _ = ref.attack_single_run(x, y, x_init=start)
    return x_best, loss_best, ~robust


def _ours_single_run(head, x, y, loss, norm, n_iter, start, targets):
    objective = ClassifierObjective(head, y, loss, targets)
    attack = APGD(EPS[norm], norm=norm, n_iter=n_iter, batch_size=len(x), stop_on_success=False)
    result = attack.run(objective, x, torch.arange(len(x)), start=start)
    return result.x_best, result.loss, result.success


@pytest.mark.parametrize("n_iter", [100, 20])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_one_run_reproduces_the_reference_trajectory(loss, norm, n_iter, batch, zero_shot_head):
    x, y, clean_logits = batch
    start = random_start(x, EPS[norm], norm, sample_seeds(7, torch.arange(N)))
    targets = apgd_t_targets(clean_logits, rank=2) if loss == "dlr-targeted" else None
    with torch.no_grad():
        ref_best, ref_loss, ref_fooled = _reference_single_run(zero_shot_head, x, y, loss, norm, n_iter, start,
                                                               targets)
    ours_best, ours_loss, ours_fooled = _ours_single_run(zero_shot_head, x, y, loss, norm, n_iter, start, targets)
    # The same operations in the same order on the same batch: the same bits, not merely close ones.
    assert torch.equal(ours_loss, ref_loss)
    assert torch.equal(ours_best, ref_best)
    assert torch.equal(ours_fooled, ref_fooled)
    assert not torch.equal(ref_best, start), "the trajectory must move away from its start"


def test_the_trajectories_differ_between_losses_so_the_comparison_can_fail(batch, zero_shot_head):
    """Guards the test above: a wrong loss, norm or budget would not pass unnoticed."""
    x, y, clean_logits = batch
    start = random_start(x, EPS["linf"], "linf", sample_seeds(7, torch.arange(N)))
    ce, _, _ = _ours_single_run(zero_shot_head, x, y, "ce", "linf", 20, start, None)
    dlr, _, _ = _ours_single_run(zero_shot_head, x, y, "dlr", "linf", 20, start, None)
    short, _, _ = _ours_single_run(zero_shot_head, x, y, "ce", "linf", 10, start, None)
    assert not torch.equal(ce, dlr) and not torch.equal(ce, short)


@pytest.mark.parametrize("rank", [2, 3, 5, 8])
def test_apgd_t_targets_are_the_reference_targets(rank, batch):
    """The reference runs target_class = 2 .. n+1 towards ``clean_logits.sort()[1][:, -target_class]``."""
    _, _, clean_logits = batch
    assert torch.equal(apgd_t_targets(clean_logits, rank), clean_logits.sort(dim=1)[1][:, -rank])
    assert not bool((apgd_t_targets(clean_logits, rank) == clean_logits.argmax(1)).any())


@pytest.mark.parametrize("n_iter", [20, 100])
def test_the_reference_backend_runs_the_checkpoint_schedule_of_its_iteration_budget(n_iter, batch, zero_shot_head,
                                                                                  monkeypatch):
    """``ref:apgd-ce+apgd-t --iterations 20`` must halve its step at the 20-iteration checkpoints (22 % = 4, ...),
    not keep those of 100 iterations, or side-by-side runs at other budgets handicap the reference."""
    from simclip_bench.attacks.reference import run_reference
    from simclip_bench.attacks.registry import resolve_attack

    seen = []
    real = APGDAttack.attack_single_run

    def spy(self, x, y, x_init=None):
        seen.append((type(self).__name__, self.n_iter, self.n_iter_2, self.n_iter_min, self.size_decr))
        return real(self, x, y, x_init)

    monkeypatch.setattr(APGDAttack, "attack_single_run", spy)
    x, y, _ = batch
    spec = resolve_attack("ref:apgd-ce+apgd-t").with_iterations(n_iter).with_targets(2)
    run_reference(spec, zero_shot_head, x[:6], y[:6], EPS["linf"], batch_size=6)
    expected = (n_iter, max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1))
    assert {s[0] for s in seen} == {"APGDAttack", "APGDAttack_targeted"}
    assert {s[1:] for s in seen} == {expected}


def test_the_ensemble_runs_apgd_t_towards_the_reference_targets_in_the_reference_order(batch, zero_shot_head,
                                                                                      monkeypatch):
    """Run k of APGD-T attacks each still-robust sample towards its (k+1)-th most likely clean class."""
    from simclip_bench.attacks import ensemble
    from simclip_bench.attacks.registry import resolve_attack

    x, y, clean_logits = batch
    runs = []

    class Recording(ClassifierObjective):
        def __init__(self, classifier, labels, loss="ce", targets=None):
            super().__init__(classifier, labels, loss, targets)
            if loss == "dlr-targeted":
                runs.append(targets.clone())

    monkeypatch.setattr(ensemble, "ClassifierObjective", Recording)
    spec = resolve_attack("apgd-t").with_iterations(2).with_targets(4)
    ensemble.run_ensemble(spec, zero_shot_head, x, y, EPS["linf"], batch_size=N)
    assert len(runs) >= 2
    for rank, targets in enumerate(runs, start=2):
        assert torch.equal(targets, clean_logits.sort(dim=1)[1][:, -rank])


def test_a_restart_runs_only_on_the_samples_still_robust_from_a_new_start(batch, zero_shot_head):
    x, y, _ = batch
    seen = []

    class Counting(ClassifierObjective):
        def __call__(self, x_adv, idx):
            seen.append(idx.clone())
            return super().__call__(x_adv, idx)

    one = APGD(EPS["linf"], n_iter=5, batch_size=N).run(Counting(zero_shot_head, y), x, torch.arange(N))
    first_run = len(seen)
    three = APGD(EPS["linf"], n_iter=5, n_restarts=3, batch_size=N).run(Counting(zero_shot_head, y), x,
                                                                        torch.arange(N))
    later = torch.cat(seen[first_run + first_run:])  # the evaluations after the second run's first restart
    assert torch.equal(one.success, three.success & one.success) and three.success.sum() >= one.success.sum()
    assert len(later) and not bool(one.success[later].any()), "a restart must skip the samples already fooled"
