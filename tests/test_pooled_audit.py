"""The audit of a whole run: one bound over every audited cell, beside the per-cell bounds.

Cells of one dataset audit the same images, so the pooled bound counts images, not (cell, image) pairs;
different datasets' images are independent, and there it is Clopper-Pearson over the summed counts.
"""
from __future__ import annotations

import random

import pandas as pd
import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.results.audit import pooled_audit
from simclip_bench.results.intervals import binomial_upper_bound, bounded_mean_upper_bound


def _row(dataset: str, n: int, missed: int, model: str = "m", eps: str = "4/255") -> dict:
    return {"model": model, "dataset": dataset, "attack": "apgd-ce+apgd-t-malt", "eps_text": eps, "audit_n": n,
            "audit_missed": missed, "audit_miss_upper": binomial_upper_bound(missed, n)}


def test_one_audited_cell_pools_to_its_own_bound():
    pooled = pooled_audit([_row("shapes", 50, 1), {"dataset": "shapes", "audit_n": None}])
    assert (pooled.cells, pooled.images, pooled.audited, pooled.missed) == (1, 50, 50, 1)
    assert pooled.miss_upper == pytest.approx(binomial_upper_bound(1, 50))


def test_cells_of_different_datasets_pool_by_clopper_pearson_over_the_sums():
    pooled = pooled_audit([_row("a", 50, 1), _row("b", 100, 0), _row("c", 30, 2)])
    assert (pooled.images, pooled.missed) == (180, 3)
    assert pooled.miss_upper == pytest.approx(binomial_upper_bound(3, 180))
    assert "Clopper-Pearson" in pooled.method


def test_cells_that_share_images_count_each_image_once():
    # two models x two eps on one dataset audit the same 50 images: 0 misses in them bound the rate by
    # Clopper-Pearson at n = 50 (5.8 points), not at the 200 pairs (1.5 points)
    rows = [_row("shapes", 50, 0, model, eps) for model in ("a", "b") for eps in ("2/255", "4/255")]
    pooled = pooled_audit(rows)
    assert (pooled.cells, pooled.images, pooled.audited) == (4, 50, 200)
    assert pooled.miss_upper == pytest.approx(binomial_upper_bound(0, 50))


def test_misses_in_cells_that_share_images_count_as_fractions_of_an_image():
    rows = [_row("shapes", 50, 2), _row("shapes", 50, 0), _row("other", 40, 1)]
    pooled = pooled_audit(rows)
    assert (pooled.images, pooled.missed) == (90, 3)
    assert pooled.miss_upper == pytest.approx(bounded_mean_upper_bound(2 / 2 + 1, 90))
    assert "Chernoff-Hoeffding" in pooled.method


def test_no_audited_row_no_pooled_audit():
    assert pooled_audit([{"dataset": "shapes", "audit_n": ""}]) is None


@pytest.mark.parametrize(("k", "n"), [(0, 10), (0, 50), (0, 500)])
def test_the_bounded_mean_bound_equals_clopper_pearson_at_zero(k, n):
    assert bounded_mean_upper_bound(k, n) == pytest.approx(binomial_upper_bound(k, n), rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(1, 50), (3, 200), (10, 40)])
def test_the_bounded_mean_bound_is_never_tighter_than_clopper_pearson_on_counts(k, n):
    assert bounded_mean_upper_bound(k, n) >= binomial_upper_bound(k, n)


def test_the_bounded_mean_bound_covers_the_true_mean_of_fractional_values():
    # 40 images, each missed in 0, 1 or 2 of 2 cells (values 0, 0.5, 1), true mean 0.1: the bound falls
    # below the truth in at most about 5 % of audits
    rng = random.Random(0)
    values, weights = [0.0, 0.5, 1.0], [0.86, 0.08, 0.06]  # mean 0.04 + 0.06 = 0.10
    below = sum(bounded_mean_upper_bound(sum(rng.choices(values, weights, k=40)), 40) < 0.10 for _ in range(2000))
    assert below / 2000 <= 0.05


def test_eval_prints_the_pooled_bound_and_writes_audit_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-clip", "--protocol", "fast", "--n-samples", "12",
                                      "--batch-size", "12", "--iterations", "2", "--eps", "8/255", "--eps", "16/255",
                                      "--audit-fraction", "0.5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "simclip-results" / "audit.csv", keep_default_na=False)
    assert table["scope"].tolist() == ["cell", "cell", "run"]
    run = table[table["scope"] == "run"].iloc[0]
    assert (run["cells"], run["images"], run["audited"]) == (2, 6, 12)
    assert run["missed"] == table[table["scope"] == "cell"]["missed"].sum()
    assert "whole run, 2 cells" in " ".join(result.output.split())
