"""The fast protocol proves itself: it costs fewer gradient evaluations, every row says what it cost, and an
audit on a seeded subset re-attacks with the full ``apgd-ce+apgd-t`` and flags what the fast one missed.

Also the pieces: MALT's target order (exact on a linear model), the per-sample cost counts (the same as
the reference code's), the Clopper-Pearson bound, and fast rows in columns of their own on the leaderboard.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from simclip_bench.attacks.cost import CountedModule
from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.attacks.target_ranking import logit_order, malt_order
from simclip_bench.cli import app
from simclip_bench.jobs.zeroshot_eval import audit_positions
from simclip_bench.leaderboard.table import build_leaderboard
from simclip_bench.results.audit import audit_outcome
from simclip_bench.results.intervals import binomial_upper_bound
from simclip_bench.tasks.protocols import get_protocol

C = 8


class Unfoolable(nn.Module):
    """Logits that barely move with the image and always rank class 0 first: no attack can succeed, so every
    sample spends the attack's whole budget."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.arange(C, dtype=torch.float32).flip(0) * 10
        return base.expand(len(x), C) + 1e-3 * x.flatten(1)[:, :C]


@pytest.fixture
def unfoolable_batch():
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(3, dtype=torch.long)


@pytest.mark.parametrize(("attack", "per_sample"), [
    ("apgd-ce", 101),                      # 1 at the start + 100 iterations
    ("apgd-ce+apgd-t", 101 + 7 * 101),     # 7 targets on 8 classes
    ("apgd-ce*5+apgd-t", 5 * 101 + 7 * 101),
    ("apgd-ce+apgd-t-malt", 101 + 7 + 3 * 101),  # 7 candidate gradients rank the targets, 3 are attacked
])
def test_a_robust_sample_costs_the_whole_budget_counted_per_sample(unfoolable_batch, attack, per_sample):
    x, y = unfoolable_batch
    outcome = run_ensemble(resolve_attack(attack), Unfoolable(), x, y, 4 / 255)
    assert outcome.robust.all()
    assert outcome.grad_evals.tolist() == [per_sample] * 3


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-ce+apgd-t", "apgd-ce*5+apgd-t"])
def test_our_counts_equal_the_reference_codes_own(unfoolable_batch, attack):
    x, y = unfoolable_batch
    ours = run_ensemble(resolve_attack(attack), Unfoolable(), x, y, 4 / 255).grad_evals
    counted = CountedModule(Unfoolable())
    run_reference(resolve_attack(f"ref:{attack}"), counted, x, y, 4 / 255)
    assert ours.sum().item() == counted.gradient_samples


def test_a_sample_that_falls_stops_costing(zero_shot_head, shapes_test):
    x, y = shapes_test.tensors()
    x, y = x[:16], y[:16]
    outcome = run_ensemble(resolve_attack("apgd-ce+apgd-t"), zero_shot_head, x, y, 2 / 255)
    fooled = ~outcome.robust & (zero_shot_head(x).argmax(-1) == y)
    assert fooled.any() and outcome.robust.any()
    assert outcome.grad_evals[outcome.robust].eq(808).all()
    assert outcome.grad_evals[fooled].lt(808).all()


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def test_malt_orders_targets_by_their_exact_distance_on_a_linear_model():
    """For linear logits the first-order distance is exact: (z_y - z_t) / ||w_y - w_t||_1 in l-inf. Class 1
    has the second-highest logit but its boundary is far; MALT puts the nearest boundary first."""
    gen = torch.Generator().manual_seed(1)
    d = 12
    weight = torch.randn(5, d, generator=gen)
    weight[1] = weight[0] + 0.01 * torch.randn(d, generator=gen)  # hard to separate from class 0: far boundary
    bias = torch.tensor([5.0, 4.9, 0.0, 0.5, -1.0])
    model = Linear(weight, bias)
    x = torch.rand(4, d, generator=gen)
    y = torch.zeros(4, dtype=torch.long)
    logits = model(x)
    z = logits - logits[:, :1]
    exact = torch.stack([-z[:, t] / (weight[0] - weight[t]).abs().sum() for t in range(1, 5)], 1)
    expected = exact.argsort(1) + 1
    assert torch.equal(malt_order(model, x, y, logits, "linf", n_candidates=4), expected)
    assert not torch.equal(logit_order(logits, y, 4), expected)


@pytest.mark.parametrize(("norm", "nearest_first"), [("linf", [1, 2]), ("l2", [2, 1])])
def test_malt_measures_distance_in_the_dual_norm_of_the_threat_model(norm, nearest_first):
    """Classes 1 and 2 have the same margin. Class 1's weight difference is spread over all 12 pixels (l1 1.2, l2
    0.35), class 2's sits in one pixel (l1 = l2 = 1): under l-inf class 1's boundary is nearer, under l2 class 2's."""
    d = 12
    weight = torch.zeros(4, d)
    weight[1] = -0.1
    weight[2, 0] = -1.0
    bias = torch.tensor([2.0, 1.6, 1.5, -5.0])
    model = Linear(weight, bias)
    x = torch.full((2, d), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    order = malt_order(model, x, y, model(x), norm, n_candidates=3)
    assert order[:, :2].tolist() == [nearest_first] * 2


def test_the_audit_counts_what_the_full_protocol_fooled_and_the_fast_one_missed():
    fast = pd.DataFrame({"sample_id": list("abcdef"), "adv_correct": [True, True, True, False, False, True]})
    full = pd.DataFrame({"sample_id": list("abcde"), "adv_correct": [True, False, False, False, True]})
    outcome = audit_outcome(fast, full)
    assert (outcome.n, outcome.missed) == (5, 2)  # b and c; e (fooled by the fast one only) is no miss
    assert outcome.flag == "fast-missed(2/5)"
    assert outcome.miss_upper == pytest.approx(binomial_upper_bound(2, 5))


@pytest.mark.parametrize(("k", "n"), [(0, 50), (1, 50), (3, 100), (5, 500), (49, 50)])
def test_the_miss_bound_is_the_exact_clopper_pearson_one(k, n):
    beta = pytest.importorskip("scipy.stats").beta  # scikit-learn, a dependency, brings scipy
    assert binomial_upper_bound(k, n) == pytest.approx(beta.ppf(0.95, k + 1, n - k), rel=1e-9)
    assert binomial_upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n)) if k == 0 else True


def test_the_audited_subset_is_seeded_nested_and_the_requested_share():
    first = audit_positions(1000, 0.1, sample_seed=0)
    assert len(first) == 100 and first == audit_positions(1000, 0.1, 0) and first != audit_positions(1000, 0.1, 1)
    assert len(audit_positions(7, 0.1, 0)) == 1 and audit_positions(7, 0.0, 0) == []
    assert audit_positions(10, 1.0, 0) == list(range(10))


@pytest.mark.parametrize(("classes", "targets"), [(4, 2), (8, 2), (16, 2), (64, 3), (100, 4), (1000, 5), (10**6, 9)])
def test_the_fast_protocols_targets_grow_with_the_class_count(classes, targets):
    # 2 on up to 16 classes (where it was chosen), ceil(log2(C) / 2) above: 2 targets missed on 64 classes
    attacks = {a.name: a for a in get_protocol("fast").spec_for(classes).attacks}
    assert attacks["apgd-t-malt"].n_targets == targets


def test_an_explicit_target_count_or_attack_wins_over_the_rule():
    assert get_protocol("fast").override(n_targets=2).spec_for(1000).attacks[1].n_targets == 2
    assert get_protocol("fast").override(attack="apgd-ce+apgd-t").spec_for(1000).attacks[1].n_targets == 2
    assert get_protocol("fast").spec_for(8) == get_protocol("fast").spec()  # 8 classes: the setting as before


def test_the_audit_is_the_full_protocol_whatever_the_fast_budget():
    fast = get_protocol("fast").override(n_iter=1, n_targets=1)
    assert fast.audit_spec_for(8) == resolve_attack("apgd-ce+apgd-t")
    assert fast.spec().attacks[0].n_iter == 1


def _eval(where, monkeypatch, *args: str) -> pd.DataFrame:
    monkeypatch.chdir(where)
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-clip", "--n-samples", "30", "--batch-size", "30",
                                      "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return pd.read_csv(where / "simclip-results" / "results.csv", keep_default_na=False, na_values=[""]), \
        result.output


def test_a_crippled_fast_attack_raises_the_flag(tmp_path, monkeypatch):
    """One iteration and one target: the full protocol on the audited samples fools images this one missed."""
    rows, output = _eval(tmp_path, monkeypatch, "--protocol", "fast", "--iterations", "1", "--n-targets", "1",
                         "--eps", "8/255", "--audit-fraction", "0.5")
    robust = rows[rows["attack"] != "none"].iloc[0]
    assert robust["audit_n"] == 15 and robust["audit_missed"] > 0
    assert f"fast-missed({int(robust['audit_missed'])}/15)" in robust["flags"].split(";")
    assert "fast-missed(" in output and "audit:" in output
    assert robust["grad_evals"] > 0 and rows[rows["attack"] == "none"].iloc[0]["grad_evals"] == 0
    samples = pd.read_csv(tmp_path / "simclip-results" / "samples.csv")
    audited = samples[samples["attack"] == "apgd-ce+apgd-t"]
    assert len(audited) == 15  # the full protocol's own rows, on the audited half only


def test_fast_rows_get_columns_of_their_own_on_the_leaderboard():
    base = {"model": "m", "checkpoint_hash": "h", "task": "zeroshot", "dataset": "shapes", "metric": "accuracy",
            "n_samples": 100, "ci_low": 0.0, "ci_high": 1.0, "flags": "", "run_id": "r", "git_sha": "g",
            "package_version": "p"}
    rows = pd.DataFrame([base | {"attack": "none", "protocol": "fast", "norm": "", "eps": 0.0, "value": 0.9},
                         base | {"attack": "apgd-ce+apgd-t-malt", "protocol": "fast", "norm": "linf",
                                 "eps": 4 / 255, "value": 0.5, "flags": "fast-missed(1/10)"},
                         base | {"attack": "apgd-ce+apgd-t", "protocol": "default", "norm": "linf", "eps": 4 / 255,
                                 "value": 0.4}])
    board = build_leaderboard(rows, {})
    assert [c.label for c in board.columns] == ["clean", "4/255", "4/255 fast"]
    cells = {c.label: cell.value for c, cell in board.entries[0].cells.items()}
    assert cells == {"clean": 0.9, "4/255": 0.4, "4/255 fast": 0.5}
    assert "fast-missed(1/10)" in board.entries[0].flags["zeroshot"]


def test_the_fast_protocol_spends_a_quarter_of_the_full_budget_on_a_robust_sample():
    fast, full = get_protocol("fast"), resolve_attack("apgd-ce+apgd-t")
    x = torch.rand(2, 3, 8, 8)
    y = torch.zeros(2, dtype=torch.long)
    cost = run_ensemble(fast.spec(), Unfoolable(), x, y, 4 / 255).grad_evals.max().item()
    assert cost == 51 + 7 + 2 * 51  # APGD-CE 50, MALT's ranking of 7 candidates, 2 targets x 50 iterations
    assert cost <= 0.25 * run_ensemble(full, Unfoolable(), x, y, 4 / 255).grad_evals.max().item()


@pytest.mark.slow
def test_a_fast_rows_cost_counts_its_audit(tmp_path):
    """The audit is part of what the fast protocol costs: the row's grad_evals is the fast attack's mean per sample
    plus the audit's evaluations spread over the same samples, so wall time follows the count."""
    from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval

    result = run_eval(EvalRequest(models=["tiny-clip"], protocol="fast", n_samples=8, n_iter=2, eps=["4/255"],
                                  audit_fraction=0.5, out=tmp_path, device="cpu"))
    row = next(r for r in result.rows if r["attack"] != "none")
    samples = pd.read_csv(tmp_path / "samples.csv")
    fast = samples[samples["setting"] == row["setting"]]
    audit = samples[(samples["attack"] == "apgd-ce+apgd-t") & samples["sample_id"].isin(fast["sample_id"])]
    assert len(audit) == 4 and audit["grad_evals"].sum() > 0
    expected = fast["grad_evals"].mean() + audit["grad_evals"].sum() / len(fast)
    assert row["grad_evals"] == pytest.approx(expected, abs=0.01)
