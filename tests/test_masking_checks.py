"""Masking checks: a model that hides its gradients is flagged, and Square finds what APGD missed."""
import copy

import torch
from torch import nn

from simclip_bench.attacks.checks import accuracy_flags, preflight_checks
from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.eps import parse_eps
from simclip_bench.attacks.registry import SINGLE_ATTACKS, AttackSpec, EnsembleSpec, resolve_attack
from simclip_bench.data.classification import ShapesSource
from simclip_bench.results.aggregate import CellMeta, cell_rows
from simclip_bench.results.store import read_samples
from simclip_bench.tasks.zeroshot import CellPlan, run_cell


class QuantisedInput(nn.Module):
    """Gradient masking by a non-differentiable front end: round pixels to 1/8 steps."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 8) / 8)


class NoisyOutput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + torch.randn(len(x), 1)


class SoftmaxOutput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).softmax(-1)


def _data(shapes_test, n=24):
    return shapes_test.tensors(list(range(n)))


def test_a_plain_model_raises_no_preflight_flag(zero_shot_head, shapes_test):
    x, y = _data(shapes_test)
    assert preflight_checks(zero_shot_head, x, y) == []


def test_quantised_input_is_flagged_for_zero_gradients(zero_shot_head, shapes_test):
    x, y = _data(shapes_test)
    assert preflight_checks(QuantisedInput(zero_shot_head), x, y) == [f"zero-gradients({len(x)}/{len(x)})"]


def test_random_and_softmax_outputs_are_flagged(zero_shot_head, shapes_test):
    x, y = _data(shapes_test)
    assert "random-outputs" in preflight_checks(NoisyOutput(zero_shot_head), x, y)
    assert "softmax-outputs" in preflight_checks(SoftmaxOutput(zero_shot_head), x, y)


def test_planted_masking_square_finds_what_apgd_missed(zero_shot_head, shapes_test):
    x, y = _data(shapes_test)
    masked = QuantisedInput(zero_shot_head)
    apgd = AttackSpec("apgd-ce", "apgd", "ce", 20)
    square = AttackSpec("square", "square", "margin", 1000)
    eps = 8 / 255
    white_only = run_ensemble(EnsembleSpec("apgd-ce", (apgd,)), masked, x, y, eps)
    both = run_ensemble(EnsembleSpec("apgd-ce+square", (apgd, square)), masked, x, y, eps)
    fooled_by_square = both.fooled_by.count("square")
    assert fooled_by_square > 0
    assert int(both.robust.sum()) == int(white_only.robust.sum()) - fooled_by_square
    assert f"square-beat-white-box({fooled_by_square})" in both.flags


def test_accuracy_flags_catch_robust_above_clean_and_rising_with_eps():
    flags = accuracy_flags(0.5, {2 / 255: 0.3, 4 / 255: 0.6})
    assert flags[2 / 255] == []
    assert flags[4 / 255] == ["robust-above-clean", "robust-rises-with-eps"]


def test_flags_land_in_the_result_rows(tiny, tmp_path):
    masked = copy.deepcopy(tiny)
    masked.model.encoder = QuantisedInput(masked.model.encoder)
    source = ShapesSource()
    plan = CellPlan(source, list(range(16)), resolve_attack("apgd-ce").with_iterations(5), [parse_eps("4/255")])
    report = run_cell(masked, plan, tmp_path, "run", torch.device("cpu"), done=set())
    assert "zero-gradients(16/16)" in report.flags
    meta = CellMeta(run_id="run", created_at="now", git_sha="", package_version="", model=masked.model_id,
                    checkpoint_hash=masked.checkpoint_hash, text_hash=masked.text_hash, dataset=source.name,
                    data_id=source.data_id, data_source=source.source_text, split="test", sample_seed=0,
                    sample_ids=[source.sample_id(i) for i in range(16)], attack="apgd-ce", attack_config={},
                    protocol="default", norm="linf", settings=plan.settings(), device="cpu", flags=report.flags)
    rows = cell_rows(read_samples(tmp_path), meta)
    adversarial = [r for r in rows if r["attack"] != "none"]
    assert adversarial and all("zero-gradients(16/16)" in r["flags"] for r in adversarial)


def test_registry_exposes_every_single_attack_with_paper_defaults():
    assert SINGLE_ATTACKS["apgd-ce"].n_iter == 100 and SINGLE_ATTACKS["apgd-t"].n_targets == 9
    assert SINGLE_ATTACKS["square"].n_iter == 5000
