"""Training helpers: recipes by model, the inner attack's settings, the collapse gauge, the schedule, the latest run."""
import json
import os

import pytest
import torch

from simclip_bench.errors import UserError
from simclip_bench.jobs.zeroshot_eval import default_models
from simclip_bench.lr_schedule import warmup_cosine
from simclip_bench.runs import latest_run
from simclip_bench.train.collapse import embedding_spread
from simclip_bench.train.config import TrainConfig, config_from_run


def test_builtin_model_gets_builtin_recipe_and_others_the_robustvlm_one():
    tiny = TrainConfig(model="tiny-clip").resolve_defaults()
    assert (tiny.steps, tiny.batch_size, tiny.lr) == (250, 64, 1e-3)
    vitl = TrainConfig(model="ViT-L-14:openai").resolve_defaults()
    recipe = (vitl.steps, vitl.batch_size, vitl.lr, vitl.weight_decay, vitl.warmup_steps)
    assert recipe == (20000, 128, 1e-5, 1e-4, 1400)


def test_tecoa_on_the_builtin_model_trains_at_a_tenth_of_the_rate():
    assert TrainConfig(model="tiny-clip", objective="tecoa").resolve_defaults().lr == 1e-4
    assert TrainConfig(model="ViT-L-14:openai", objective="tecoa").resolve_defaults().lr == 1e-5


def test_explicit_options_beat_the_recipe():
    assert TrainConfig(lr=5e-4, steps=7).resolve_defaults().lr == 5e-4


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_size", -1), ("lr", 0.0), ("eps", "5"),
                                          ("objective", "fare2"), ("device", "gpu"), ("attack_momentum", 1.0),
                                          ("attack_momentum", -0.5), ("attack_momentum", float("nan")),
                                          ("attack_loss", "ce"), ("attack_loss", "kl"), ("attack_start", "zero")])
def test_bad_config_is_refused(field, value):
    with pytest.raises(UserError):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("objective, attack_loss", [("simclip-anchored", "l2"), ("fare", "l2"), ("tecoa", "ce"),
                                                    ("simclip", "cosine")])
def test_inner_attack_defaults_are_the_references(objective, attack_loss):
    cfg = TrainConfig(objective=objective).resolve_defaults()
    assert (cfg.attack_momentum, cfg.attack_loss, cfg.attack_start) == (0.9, attack_loss, "ball")


def test_an_explicit_attack_loss_is_kept():
    assert TrainConfig(attack_loss="cosine").resolve_defaults().attack_loss == "cosine"


def _saved_run(folder, **config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "tiny-clip", "steps": 5, "batch_size": 8, **config}))
    return folder


@pytest.mark.parametrize("objective, former", [("simclip-anchored", "cosine"), ("fare", "l2"), ("tecoa", "ce"),
                                               ("simclip", "cosine")])
def test_a_run_saved_before_the_attack_settings_resumes_with_the_attack_it_was_trained_with(objective, former,
                                                                                          tmp_path):
    cfg = config_from_run(_saved_run(tmp_path / "old", objective=objective))
    assert (cfg.attack_momentum, cfg.attack_loss, cfg.attack_start) == (0.0, former, "ball-clipped")


def test_a_run_saved_without_an_objective_resumes_the_former_default_attack(tmp_path):
    cfg = config_from_run(_saved_run(tmp_path / "old"))
    assert (cfg.objective, cfg.attack_loss, cfg.attack_momentum) == ("simclip-anchored", "cosine", 0.0)


def test_a_run_with_the_attack_settings_resumes_with_them(tmp_path):
    saved = {"objective": "simclip-anchored", "attack_momentum": 0.5, "attack_loss": "l2", "attack_start": "ball"}
    cfg = config_from_run(_saved_run(tmp_path / "new", **saved))
    assert (cfg.attack_momentum, cfg.attack_loss, cfg.attack_start) == (0.5, "l2", "ball")


def test_embedding_spread_is_near_one_when_spread_and_near_zero_when_collapsed():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    collapsed = torch.ones(512, 64) + 1e-3 * torch.randn(512, 64, generator=g)
    assert 0.9 < embedding_spread(spread) < 1.1
    assert embedding_spread(collapsed) < 0.05


def test_schedule_warms_up_linearly_then_decays_to_zero():
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-3


def test_latest_finished_run_is_the_default_second_model(tmp_path):
    assert latest_run(tmp_path) is None and default_models(tmp_path) == ["tiny-clip"]
    for i, name in enumerate(["b", "a"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "encoder.safetensors").write_bytes(b"")
        os.utime(tmp_path / name / "encoder.safetensors", (1000 + i, 1000 + i))
    (tmp_path / "unfinished").mkdir()
    assert latest_run(tmp_path) == tmp_path / "a"
    assert default_models(tmp_path) == ["tiny-clip", str(tmp_path / "a")]


def test_the_collapse_watch_remembers_the_step_of_its_warning_across_a_resume():
    from simclip_bench.train.collapse import CollapseWatch

    watch = CollapseWatch(warn_ratio=0.5, stop_ratio=0.0)
    for step, spread in ((10, 0.8), (20, 0.6), (30, 0.3), (40, 0.1)):
        watch.check(step, spread, None, log=lambda _: None)
    assert watch.warned_at_step == 30  # the first step below half the starting spread, kept after it
    resumed = CollapseWatch()
    resumed.load_state_dict(watch.state_dict())
    assert resumed.warned_at_step == 30
    old = {k: v for k, v in watch.state_dict().items() if k != "warned_at_step"}  # a checkpoint from before
    before = CollapseWatch()
    before.load_state_dict(old)
    assert before.warned_at_step is None
