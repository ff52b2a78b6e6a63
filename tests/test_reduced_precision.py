"""A reduced-precision search never stops on, nor counts, a success that float32 does not confirm, and
loses none that float32 would see.

Under bf16 autocast the search's own success flag can be wrong at the decision boundary, both ways. The
classifier objective flags every iterate within bf16's rounding of the boundary; APGD and Square pause a
flagged sample, ask the objective's float32 ``judge``, and let it leave only on FOOLED; a rejected sample
resumes its trajectory exactly where it paused. The verdict and prediction of the kept point are the ones
counted: re-evaluating the kept points in any batch composition gives every verdict again. The bf16 path
runs on a CPU (``torch.autocast("cpu")``), so these tests cover the code users run on CUDA.
"""
import pytest
import torch

from simclip_bench.attacks.apgd import APGD
from simclip_bench.attacks.base import ClassifierObjective
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.devices import autocast_for, resolve_precision

EPS = 4 / 255


@pytest.fixture(scope="module")
def data(shapes_test):
    return shapes_test.tensors(list(range(32)))


class FlagsEverything(ClassifierObjective):
    """A search whose success flag is always raised (a reduced-precision check gone wrong at every step)."""

    def __call__(self, x_adv, idx):
        loss, _ = super().__call__(x_adv, idx)
        return loss, torch.ones_like(loss, dtype=torch.bool)


class FlagsNothing(ClassifierObjective):
    def __call__(self, x_adv, idx):
        loss, _ = super().__call__(x_adv, idx)
        return loss, torch.zeros_like(loss, dtype=torch.bool)


class NeverConfirmed(FlagsEverything):
    def judge(self, x_adv, idx):
        return torch.zeros(len(idx), dtype=torch.int8), torch.zeros(len(idx), dtype=torch.long)


def test_a_rejected_flag_costs_nothing_the_trajectory_goes_on_as_if_never_flagged(data, zero_shot_head):
    x, y = data
    idx = torch.arange(len(x))
    flagged = APGD(EPS, n_iter=20, batch_size=8).run(NeverConfirmed(zero_shot_head, y), x, idx)
    quiet = APGD(EPS, n_iter=20, batch_size=8).run(FlagsNothing(zero_shot_head, y), x, idx)
    assert not flagged.success.any()
    assert flagged.unconfirmed >= 20 * len(x), "every iteration's flag was put to the confirmation and rejected"
    assert torch.equal(flagged.loss, quiet.loss) and torch.equal(flagged.x_best, quiet.x_best)


def test_returned_successes_are_exactly_the_float32_confirmed_ones(data, zero_shot_head):
    x, y = data
    result = APGD(EPS, n_iter=20, batch_size=8).run(FlagsEverything(zero_shot_head, y), x, torch.arange(len(x)))
    assert torch.equal(result.success, predict(zero_shot_head, result.x_adv, 64) != y)
    assert 0 < int(result.success.sum()) < len(x)
    assert result.unconfirmed > 0


def test_without_the_confirmation_a_false_flag_would_end_the_search_and_lose_the_sample(data, zero_shot_head):
    """What the confirmation prevents: with the flag taken at its word, a sample leaves at a point float32 does
    not call fooled, and the ensemble's float32 check then counts it robust."""
    x, y = data
    idx = torch.arange(len(x))

    class TakenAtItsWord(FlagsEverything):
        confirm = judge = None  # no confirmation: the search's flag is final

    confirmed = APGD(EPS, n_iter=20, batch_size=8).run(FlagsEverything(zero_shot_head, y), x, idx)
    unchecked = APGD(EPS, n_iter=20, batch_size=8).run(TakenAtItsWord(zero_shot_head, y), x, idx)
    really_fooled = predict(zero_shot_head, unchecked.x_adv, 64) != y
    assert int(really_fooled.sum()) < int(confirmed.success.sum())


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-ce+apgd-t-malt"])  # the fast protocol's attack too
def test_bf16_search_on_a_cpu_counts_no_sample_that_float32_does_not_fool(data, zero_shot_head, attack):
    x, y = data
    spec = resolve_attack(attack).with_iterations(20)
    out = run_ensemble(spec, zero_shot_head, x, y, EPS, batch_size=8,
                       autocast=lambda: autocast_for("bf16", torch.device("cpu")))
    fooled = ~out.robust & (predict(zero_shot_head, x, 64) == y)
    assert fooled.any()
    assert bool((predict(zero_shot_head, out.x_adv[fooled], 64) != y[fooled]).all())


def test_bf16_autocast_really_runs_in_bf16_on_a_cpu(zero_shot_head, data):
    x, _ = data
    with autocast_for("bf16", torch.device("cpu")):
        z = zero_shot_head.encoder(x[:2])
    assert z.dtype == torch.bfloat16


@pytest.mark.parametrize("name, device, expected", [("auto", "cpu", "fp32"), ("auto", "cuda", "bf16"),
                                                    ("bf16", "cpu", "bf16"),
                                                    ("fp32", "cuda", "fp32")])
def test_auto_precision_is_fp32_on_a_cpu_and_the_task_default_on_cuda(name, device, expected):
    assert resolve_precision(name, torch.device(device)) == expected


def test_eval_precision_bf16_is_its_own_setting_and_is_recorded(tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    out = tmp_path / "res"
    base = ["eval", "--model", "tiny-clip", "--n-samples", "12", "--iterations", "3", "--eps", "4/255",
            "--out", str(out), "--device", "cpu"]
    for precision in ("fp32", "bf16"):
        result = CliRunner().invoke(app, [*base, "--precision", precision])
        assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    attacked = rows[rows["attack"] != "none"]
    assert len(attacked) == 2 and attacked["setting"].nunique() == 2
    assert sorted(json.loads(c)["search_precision"] for c in attacked["attack_config"]) == ["bf16", "fp32"]


def test_attack_gallery_runs_its_search_in_bf16_on_a_cpu(tmp_path):
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    result = CliRunner().invoke(app, ["attack", "--n-images", "2", "--iterations", "3", "--precision", "bf16",
                                      "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*_adv.png"))) == 2
