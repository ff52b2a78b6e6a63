"""Training helpers: recipes by model, the collapse gauge, the schedule, finding the latest run."""
import os

import pytest
import torch

from simclip_bench.errors import UserError
from simclip_bench.evaluate import default_models
from simclip_bench.train.schedule import warmup_cosine
from simclip_bench.train.trainer import TrainConfig, embedding_spread, latest_run


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
                                          ("objective", "fare2"), ("device", "gpu")])
def test_bad_config_is_refused(field, value):
    with pytest.raises(UserError):
        TrainConfig(**{field: value}).validate()


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
