"""Shared fixtures: the built-in tiny model and a little generated data. No network anywhere."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for a hub fails fast instead of hanging
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    """The built-in tiny CLIP, loaded through the public model-spec path (frozen, eval mode)."""
    from simclip_bench.models.spec import load_model

    return load_model("tiny-clip", "cpu")


@pytest.fixture(scope="session")
def shapes_test():
    from simclip_bench.data.shapes import ShapesDataset

    return ShapesDataset("test", size=200)


@pytest.fixture(scope="session")
def zero_shot_head(tiny, shapes_test):
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    weights = build_text_classifier(tiny.model, shapes_test.classnames, shapes_test.templates)
    return ZeroShotClassifier(tiny.model.encoder, weights).eval()


@pytest.fixture(scope="session")
def perturbed_encoder(tmp_path_factory, tiny):
    """A second encoder: the tiny tower with slightly perturbed weights, saved as a simclip encoder file (path)."""
    import copy

    from simclip_bench.models.checkpoint import save_encoder

    visual = copy.deepcopy(tiny.model.clip.visual)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in visual.parameters():
            p.add_(0.05 * p.std() * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("enc") / "encoder.safetensors"
    save_encoder(visual, path, base_model="tiny-clip", arch="simclip-tiny")
    return path


@pytest.fixture(scope="session")
def default_training_dir(tmp_path_factory):
    """A folder where `simclip train` ran with no arguments (runs/<time>-simclip-anchored); shared by the
    slow end-to-end tests so the default training runs once per session."""
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    where = tmp_path_factory.mktemp("default-train")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    return where
