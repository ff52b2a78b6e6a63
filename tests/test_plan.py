"""The cost plan: its counts are the ones a real run counts, its FLOPs the ones the real model executes, and
``--dry-run`` loads nothing."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.errors import UserError
from simclip_bench.plan.attack_budget import ensemble_budget

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One model-cost cache for the module (counting ViT-L-14 takes seconds), none of the user's."""
    monkeypatch.setenv("SIMCLIP_CACHE", str(tmp_path_factory.getbasetemp() / "plan-cache"))


class NeverFooled(nn.Module):
    """Logits with class 0 ten units ahead whatever the image (within any eps), but a non-zero input gradient."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_classes, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)),
                              requires_grad=False)
        self.n_classes = n_classes

    def forward(self, x):
        bias = torch.zeros(self.n_classes, device=x.device)
        bias[0] = 10.0
        return bias + 1e-3 * x.flatten(1) @ self.w.T


@pytest.mark.parametrize("attack, n_classes, expected", [
    ("apgd-ce", 8, 6), ("apgd-ce+apgd-t", 8, 6 + 7 * 6), ("apgd-ce*3", 8, 18), ("apgd-dlr", 8, 6),
    ("apgd-ce+apgd-t", 3, 6), ("apgd-ce+apgd-t-malt", 8, None), ("pgd", 8, 5),
    pytest.param("square", 8, 0, marks=pytest.mark.slow),
    ("apgd-ce*2+apgd-t", 12, 12 + 9 * 6), ("apgd-dlr", 2, 0),
])
def test_the_planned_worst_case_is_what_an_image_that_is_never_fooled_costs(attack, n_classes, expected):
    spec = resolve_attack(attack).with_iterations(5)  # Square keeps its 5 000 queries: forward passes only
    model = NeverFooled(n_classes).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(3, dtype=torch.long)
    out = run_ensemble(spec, model, x, labels, 4 / 255, batch_size=2)
    assert out.robust.all()  # really never fooled: the worst case
    planned = ensemble_budget(spec, n_classes).grad_evals
    assert out.grad_evals.tolist() == [planned] * 3
    if expected is not None:
        assert planned == expected


def test_the_fast_protocol_costs_160_on_eight_classes_and_808_for_the_full_one():
    from simclip_bench.tasks.protocols import get_protocol

    fast = get_protocol("fast")
    assert ensemble_budget(fast.spec_for(8), 8).grad_evals == 51 + 7 + 2 * 51 == 160
    assert ensemble_budget(fast.audit_spec_for(8), 8).grad_evals == 101 + 7 * 101 == 808
    assert ensemble_budget(resolve_attack("apgd-ce"), 8).grad_evals == 101


@pytest.mark.slow
def test_the_plan_bounds_the_evaluations_a_real_run_counts(tmp_path):
    import pandas as pd

    from simclip_bench.jobs.plan import plan_eval_request
    from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval

    request = EvalRequest(models=["tiny-clip"], attack="apgd-ce+apgd-t", eps=["4/255"], n_samples=24, n_iter=4,
                          out=tmp_path / "out", device="cpu")
    plan = plan_eval_request(request, "cpu")
    run_eval(request)
    counted = pd.read_csv(tmp_path / "out" / "samples.csv")["grad_evals"].sum()
    assert 0 < counted <= plan.grad_evals == 24 * (5 + 7 * 5)


def _count_real(fn) -> int:
    from simclip_bench.plan.model_cost import _count

    return _count(fn)


def test_flops_counted_on_the_meta_device_are_those_of_the_real_model():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from simclip_bench.models.spec import load_model
    from simclip_bench.plan.model_cost import count_model_cost

    cost = count_model_cost("simclip-tiny", n_classes=8)
    visual = load_model("tiny-clip").model.clip.visual
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH):  # the CPU's fused attention kernel has no FLOP formula
        classes = torch.zeros(8, visual(x).shape[-1])
        real = _count_real(lambda: torch.autograd.grad((100 * visual(x) @ classes.T).sum(), [x]))
    assert cost.grad_flops == real
    assert cost.train_flops > cost.grad_flops > cost.forward_flops > 0


@pytest.mark.slow
def test_memory_per_image_is_counted_and_grows_with_the_architecture():
    from simclip_bench.plan.model_cost import model_cost

    tiny, vit = model_cost("simclip-tiny"), model_cost("ViT-B-32")
    assert 0 < tiny.grad_bytes < vit.grad_bytes
    assert vit.image_size == 224 and vit.vision_params > 80e6
    assert model_cost("ViT-B-32") == vit  # from the cache the second time


@pytest.mark.parametrize("spec, config", [
    ("tiny-clip", "simclip-tiny"), ("ViT-L-14:openai", "ViT-L-14"), ("hf-hub:chs20/fare4-clip", "ViT-L-14-quickgelu"),
    ("simclip4=/nowhere/simclip4.pt", "ViT-L-14-quickgelu"), ("hf-hub:zw123/delta_clip_h14_336", "ViT-H-14-CLIPA-336"),
    ("random:ViT-B-32@64", "ViT-B-32@64px"),
])
def test_the_architecture_of_a_spec_is_known_without_its_weights(spec, config):
    from simclip_bench.plan.architecture import planned_architecture

    assert planned_architecture(spec).config == config


def test_an_unknown_hub_model_cannot_be_planned_offline_and_says_so():
    from simclip_bench.plan.architecture import planned_architecture

    with pytest.raises(UserError, match="open_clip_config.json"):
        planned_architecture("hf-hub:nobody/nothing-here")


def test_a_run_directory_plans_as_the_architecture_it_recorded(tmp_path):
    from simclip_bench.plan.architecture import planned_architecture

    (tmp_path / "config.json").write_text(json.dumps({"arch": "ViT-B-16", "base_model": "ViT-B-16:openai"}))
    assert planned_architecture(str(tmp_path)).config == "ViT-B-16"


def test_dataset_sizes_come_from_the_table_the_source_or_the_files(tmp_path):
    from simclip_bench.plan.datasets import dataset_extents

    for name in ("a", "b"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "folder" / name / f"{i}.png").write_bytes(b"")
    (tmp_path / "folder" / "a" / "notes.txt").write_text("")
    extents = {e.name: e for e in dataset_extents(["imagenet", "shapes", str(tmp_path / "folder")])}
    assert (extents["imagenet1k"].images, extents["imagenet1k"].classes, extents["imagenet1k"].templates) == \
        (50_000, 1000, 80)
    assert extents["shapes"].classes == 8 and extents["shapes"].images > 0
    assert (extents[str(tmp_path / "folder")].images, extents[str(tmp_path / "folder")].classes) == (6, 2)


def test_a_training_step_is_counted_from_the_objective(monkeypatch):
    from simclip_bench.plan.train_budget import objective_passes

    anchored = objective_passes("simclip-anchored", 0.0, False, None, 10)
    assert (anchored.pgd_grad_evals, anchored.view_forwards, anchored.train_passes) == (10, 1, 1)
    assert anchored.grad_evals == 11 and anchored.needs_original
    assert objective_passes("tecoa", 0.0, False, None, 10).view_forwards == 0
    assert objective_passes("simclip", 0.0, False, None, 10).train_passes == 2  # the symmetric loss


def test_the_training_count_is_what_the_session_runs():
    """steps x batch x (attack steps + training passes), checked against the encoder calls of real steps."""
    from simclip_bench.plan.devices import get_plan_device
    from simclip_bench.plan.train_plan import plan_train
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.session import TrainSession

    cfg = TrainConfig(steps=2, batch_size=4, train_size=8, probe_size=0, attack_steps=3, warmup_steps=0, device="cpu")
    plan = plan_train(cfg, get_plan_device("cpu"))
    session = TrainSession(cfg, log=lambda *_: None)
    seen = {"grad": 0, "forward": 0}
    forward, original = session.encoder.forward, session.original.forward

    def counted(x, *args, **kwargs):
        seen["grad" if torch.is_grad_enabled() else "forward"] += len(x)
        return forward(x, *args, **kwargs)

    def counted_original(x, *args, **kwargs):
        seen["forward"] += len(x)
        return original(x, *args, **kwargs)

    session.encoder.forward, session.original.forward = counted, counted_original
    session.step(), session.step()
    assert plan.grad_evals == seen["grad"] == 2 * 4 * (3 + 1)
    assert plan.rows[0].forward_passes == seen["forward"] == 2 * 4


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_loads_nothing(tmp_path, monkeypatch):
    from simclip_bench.cli import app
    from simclip_bench.models import spec

    def no_loading(*args, **kwargs):
        raise AssertionError("--dry-run loaded a model")

    for way in ("_finish", "create_open_clip", "create_from_hub"):  # every path of load_model ends in one of them
        monkeypatch.setattr(spec, way, no_loading)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = runner.invoke(app, ["eval", "--dry-run", "--model", "hf-hub:chs20/fare4-clip", "--dataset", "imagenet",
                                 "--protocol", "robustvlm", "--plan-device", "h100"])
    assert result.exit_code == 0, result.output
    assert "5,000" in result.output and "1,414.0" in result.output and "h100" in result.output
    assert "35.0 % of 989.4 TFLOP/s" in result.output  # the efficiency it assumes
    result = runner.invoke(app, ["train", "--dry-run", "--model", "ViT-L-14:openai", "--plan-device", "a100"])
    assert result.exit_code == 0, result.output
    assert "2,560,000" in result.output and "11.0" in result.output
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("task, runs", [("captioning", 6), ("vqa", 8)])
def test_the_vlm_plan_counts_every_run_of_the_ensemble(task, runs, tmp_path):
    import pandas as pd

    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.jobs.plan import plan_vlm_request
    from simclip_bench.jobs.vlm_eval import VLMEvalRequest, run_vlm_eval

    request = VLMEvalRequest(task=task, models=["tiny-clip"], eps=[parse_eps("4/255")], n_samples=6, n_iter=2,
                             out=tmp_path / "out", device="cpu")
    plan = plan_vlm_request(request, "cpu")
    assert plan.rows[0].per_image == runs * 3
    run_vlm_eval(request)
    counted = pd.read_csv(tmp_path / "out" / "vlm_samples.csv")["grad_evals"]
    assert counted.max() <= runs * 3 and counted.sum() <= plan.grad_evals == 6 * runs * 3
    if task == "captioning":  # 5 reference captions each and no score under the threshold: the bound is reached
        assert counted.max() == runs * 3


def test_the_time_model_at_a_lower_count_keeps_the_calls_and_scales_the_gradient_flops():
    from simclip_bench.jobs.plan import plan_eval_request
    from simclip_bench.jobs.zeroshot_eval import EvalRequest

    row = plan_eval_request(EvalRequest(models=["tiny-clip"], n_samples=100), "cpu").rows[0]
    assert 0 < row.gradient_seconds < row.seconds
    assert row.seconds_at(row.grad_evals) == pytest.approx(row.seconds)
    assert row.seconds_at(row.grad_evals / 2) == pytest.approx(row.seconds - row.gradient_seconds / 2)


def test_the_vlm_plan_counts_runs_per_task_as_the_ensemble_runs_them():
    # RobustVLM's ensemble: one run per ground truth (captioning and VQA up to 5; POPE and ScienceQA have one,
    # the label and the right option), the float32 run, and VQA's two targeted runs
    from simclip_bench.plan.vlm_plan import vlm_runs

    assert [vlm_runs(t, "ensemble") for t in ("captioning", "vqa", "pope", "scienceqa")] == [6, 8, 2, 2]
    assert vlm_runs("pope", "single") == 1 and vlm_runs("vqa", "none") == 0
