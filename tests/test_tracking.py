"""``simclip train --log``: optional tracking, off by default, never required."""
from __future__ import annotations

import sys
import types

import pytest

from simclip_bench.errors import UserError
from simclip_bench.train.tracking import open_tracker


def test_no_tracking_by_default():
    assert open_tracker("none", "unused", {}) is None


def test_an_unknown_tracker_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'wandb'"):
        open_tracker("wandbb", "unused", {})


def test_a_missing_package_is_a_one_line_fix_and_creates_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(UserError, match="pip install wandb"):
        open_tracker("wandb", tmp_path / "run", {})
    assert not (tmp_path / "run").exists()


def test_wandb_gets_the_config_and_every_numeric_metric(tmp_path, monkeypatch):
    logged = {}

    class Run:
        def log(self, values, step):
            logged[step] = values

        def finish(self):
            logged["finished"] = True

    def init(**kwargs):
        logged["init"] = kwargs
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    tracker = open_tracker("wandb", tmp_path / "run", {"objective": "simclip-anchored"})
    tracker.log(10, {"step": 10, "loss": -0.8, "lr": 1e-3, "note": "text"})
    tracker.close()
    assert logged["init"]["config"] == {"objective": "simclip-anchored"}
    assert logged[10] == {"loss": -0.8, "lr": 1e-3}
    assert logged["finished"]


def test_train_log_without_the_package_is_one_line_exit_2_before_training(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    result = CliRunner().invoke(app, ["train", "--log", "tensorboard", "--out", str(tmp_path / "run"),
                                      "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("simclip: error: --log tensorboard needs the tensorboard "
                                                      "package: pip install tensorboard")
    assert not (tmp_path / "run" / "config.json").exists()
