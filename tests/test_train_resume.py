"""Checkpoint and resume: a run stopped and resumed ends bit-identical to one never stopped."""
from __future__ import annotations

import json

import pytest
import torch

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import load_safetensors
from simclip_bench.train import session as trainer_session
from simclip_bench.train.checkpointing import CHECKPOINT_FILENAME, load_checkpoint
from simclip_bench.train.collapse import TrainingCollapsed
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.loop import resume, train
from simclip_bench.train.session import TrainSession

# Small but complete: predictor, anchor blend, accumulation, warm-up and cosine all in play.
SMALL = dict(objective="simclip", anchor_weight=0.5, predictor=True, steps=5, batch_size=8, accum_steps=2,
             train_size=64, probe_size=40, warmup_steps=2, log_every=2, save_every=2, attack_steps=2, device="cpu")


def _quiet(*_):
    pass


def _weights(run_dir):
    return load_safetensors(run_dir / "encoder.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(TrainConfig(out=str(tmp_path_factory.mktemp("runs") / "full"), **SMALL), log=_quiet)


def test_resumed_run_ends_with_bit_identical_weights(uninterrupted, tmp_path):
    run = tmp_path / "stopped"
    train(TrainConfig(out=str(run), **SMALL), log=_quiet, stop_after=3)
    assert not (run / "encoder.safetensors").exists() and load_checkpoint(run)["step"] == 3
    resume(run, log=_quiet)
    a, b = _weights(uninterrupted), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_run_logs_the_same_losses(uninterrupted, tmp_path):
    run = tmp_path / "stopped"
    train(TrainConfig(out=str(run), **SMALL), log=_quiet, stop_after=1)
    resume(run, log=_quiet, stop_after=2)
    resume(run, log=_quiet)

    def losses(d):
        return [(r["step"], r.get("loss")) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]

    assert losses(run) == losses(uninterrupted)


def test_config_json_records_the_inner_attack_settings(uninterrupted):
    saved = json.loads((uninterrupted / "config.json").read_text())
    assert (saved["attack_momentum"], saved["attack_loss"], saved["attack_start"]) == (0.9, "cosine", "ball")


# The inner attack of runs saved before it had momentum, a start outside [0,1] and a choice of loss.
FORMER_ATTACK = {"attack_momentum": 0.0, "attack_loss": "cosine", "attack_start": "ball-clipped"}
ANCHORED = {**SMALL, "objective": "simclip-anchored", "anchor_weight": 0.0, "predictor": False}


def test_a_run_saved_before_the_attack_settings_resumes_as_it_was_trained(tmp_path):
    """Its config.json lacks them: it resumes with the former attack, bit-identical to a run never stopped."""
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **ANCHORED, **FORMER_ATTACK), log=_quiet)
    old = tmp_path / "old"
    train(TrainConfig(out=str(old), **ANCHORED, **FORMER_ATTACK), log=_quiet, stop_after=2)
    saved = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in FORMER_ATTACK}))
    resume(old, log=_quiet)
    a, b = _weights(whole), _weights(old)
    assert all(torch.equal(a[k], b[k]) for k in a)
    new = train(TrainConfig(out=str(tmp_path / "new"), **ANCHORED), log=_quiet)  # guards the test: the
    assert any(not torch.equal(a[k], _weights(new)[k]) for k in a)  # default attack ends elsewhere


def test_the_session_attacks_with_the_configured_momentum_loss_and_start(tmp_path, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return training_pgd(*args, **kwargs)

    training_pgd = trainer_session.training_pgd
    monkeypatch.setattr(trainer_session, "training_pgd", spy)
    cfg = TrainConfig(**{**ANCHORED, "steps": 1, "accum_steps": 1, "probe_size": 0, "attack_steps": 1},
                      attack_momentum=0.3, attack_loss="cosine", out=str(tmp_path / "r"))
    session = TrainSession(cfg, log=_quiet)
    session.step()
    assert calls == [{"momentum": 0.3, "clip_start": False}]
    assert session.objective.attack_loss_name == "cosine"


def test_checkpoint_holds_model_optimizer_schedule_rng_and_data_position(uninterrupted):
    state = load_checkpoint(uninterrupted)
    assert state["step"] == SMALL["steps"]
    assert {"model", "predictor", "optimizer", "rng", "data", "collapse"} <= state.keys()
    assert state["data"]["step"] == SMALL["steps"] and state["optimizer"]["state"]
    assert not list(uninterrupted.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_a_different_seed_gives_different_weights(uninterrupted, tmp_path):
    """Guards the identity test: the run is not trivially reproducible by doing nothing."""
    other = train(TrainConfig(out=str(tmp_path / "seed1"), **{**SMALL, "seed": 1}), log=_quiet)
    a, b = _weights(uninterrupted), _weights(other)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_finished_run_and_a_directory_without_checkpoint(uninterrupted, tmp_path):
    with pytest.raises(UserError, match="already finished"):
        resume(uninterrupted, log=_quiet)
    (tmp_path / "config.json").write_text(json.dumps({"model": "tiny-clip"}))
    with pytest.raises(UserError, match=CHECKPOINT_FILENAME):
        resume(tmp_path, log=_quiet)


def test_new_run_refuses_to_overwrite_an_unfinished_one(tmp_path):
    run = tmp_path / "r"
    train(TrainConfig(out=str(run), **SMALL), log=_quiet, stop_after=1)
    with pytest.raises(UserError, match="--resume"):
        train(TrainConfig(out=str(run), **SMALL), log=_quiet)


def test_collapse_stops_the_run_with_a_message_and_writes_no_encoder(tmp_path, monkeypatch):
    falling = iter([0.9, 0.3, 0.05, 0.01, 0.01])
    monkeypatch.setattr(TrainSession, "spread", lambda self: next(falling))
    warnings = []
    cfg = TrainConfig(out=str(tmp_path / "c"), **{**SMALL, "log_every": 1, "probe_size": 0})
    with pytest.raises(TrainingCollapsed, match="collapsed.*--collapse-stop 0"):
        train(cfg, log=warnings.append)
    assert any("warning" in w for w in warnings)
    assert not (tmp_path / "c" / "encoder.safetensors").exists()
    last = json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {"step": 3, "stopped": "collapse"}
