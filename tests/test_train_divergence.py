"""Training never loses work: a NaN/Inf stops the run cleanly, and a SIGKILL at any step resumes exactly.

The in-process resume test (test_train_resume.py) proves bit-identity after a clean ``stop_after``; the
subprocess test here proves it after a real SIGKILL, wherever it lands (even in a checkpoint write).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import load_safetensors, read_safetensors_metadata
from simclip_bench.train.checkpointing import CHECKPOINT_FILENAME, load_checkpoint
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.divergence import TrainingDiverged
from simclip_bench.train.loop import train
from simclip_bench.train.session import TrainSession

# Tiny and fast: 4 steps of 4 images, a checkpoint every 2 steps, so step 3 diverges after checkpoint 2.
SMALL = dict(steps=4, batch_size=4, train_size=16, probe_size=0, warmup_steps=1, log_every=1, save_every=2,
             attack_steps=1, device="cpu")
SMALL_FLAGS = ["--steps", "4", "--batch-size", "4", "--train-size", "16", "--probe-size", "0", "--warmup-steps", "1",
               "--log-every", "1", "--save-every", "2", "--attack-steps", "1", "--device", "cpu"]


def _quiet(*_):
    pass


@contextlib.contextmanager
def _non_finite(session: TrainSession, kind: str) -> Iterator[None]:
    """``"loss"``: the loss becomes NaN (still differentiable); ``"grad"``: the loss stays finite but the
    gradient of the first trainable weight becomes Inf, as an overflow in the backward pass would do."""
    if kind == "loss":
        loss = session.objective.loss

        def nan_loss(z, p, views):
            value, report = loss(z, p, views)
            return value * math.nan, report

        session.objective.loss = nan_loss
        try:
            yield
        finally:
            del session.objective.loss
    else:
        hook = next(session.encoder.parameters()).register_hook(lambda g: torch.full_like(g, math.inf))
        try:
            yield
        finally:
            hook.remove()


@pytest.fixture
def poison(monkeypatch):
    """``poison(step, kind)`` makes training step ``step`` (from 1) non-finite (see :func:`_non_finite`).
    Returns what was seen when that step began: the session and the checkpoint file's bytes (or None)."""
    seen: dict = {}

    def install(at_step: int, kind: str) -> dict:
        original = TrainSession.step

        def step(self: TrainSession) -> dict:
            if self.step_count + 1 != at_step:
                return original(self)
            checkpoint = Path(self.cfg.out) / CHECKPOINT_FILENAME
            seen.update(session=self, checkpoint=checkpoint.read_bytes() if checkpoint.exists() else None)
            with _non_finite(self, kind):
                return original(self)

        monkeypatch.setattr(TrainSession, "step", step)
        return seen

    return install


def _all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(t.isfinite().all()) for t in weights.values() if t.is_floating_point())


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_one_line_naming_step_value_last_checkpoint_and_remedy(poison, tmp_path):
    poison(3, "loss")
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as caught:
        train(TrainConfig(out=str(run), **SMALL), log=_quiet)
    message = str(caught.value)
    assert "\n" not in message
    assert "diverged at step 3: the loss is nan" in message
    assert f"last good checkpoint: {run / CHECKPOINT_FILENAME} (step 2)" in message
    assert "--lr" in message and f"simclip train --resume {run}" in message


def test_divergence_leaves_the_last_checkpoint_as_it_was_and_writes_no_encoder(poison, tmp_path):
    seen = poison(3, "loss")
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged):
        train(TrainConfig(out=str(run), **SMALL), log=_quiet)
    assert seen["checkpoint"] is not None and (run / CHECKPOINT_FILENAME).read_bytes() == seen["checkpoint"]
    state = load_checkpoint(run)
    assert state["step"] == 2 and _all_finite(state["model"])
    assert _same(seen["session"].encoder.visual.state_dict(), state["model"]), "step 3 reached the weights"
    assert not (run / "encoder.safetensors").exists()
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last == {"step": 3, "stopped": "diverged", "non_finite": "loss"}


def test_inf_gradients_with_a_finite_loss_are_caught_before_the_optimizer_step(poison, tmp_path):
    seen = poison(3, "grad")
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="step 3: the total gradient norm is inf") as caught:
        train(TrainConfig(out=str(run), **SMALL), log=_quiet)
    assert caught.value.what == "gradients"
    state = load_checkpoint(run)
    assert state["step"] == 2 and (run / CHECKPOINT_FILENAME).read_bytes() == seen["checkpoint"]
    assert _same(seen["session"].encoder.visual.state_dict(), state["model"]), "step 3 reached the weights"
    assert not (run / "encoder.safetensors").exists()


def test_divergence_before_the_first_checkpoint_says_there_is_none(poison, tmp_path):
    poison(1, "loss")
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="step 1: .* no checkpoint was written yet"):
        train(TrainConfig(out=str(run), **SMALL), log=_quiet)
    assert not (run / CHECKPOINT_FILENAME).exists() and not (run / "encoder.safetensors").exists()


def test_cli_reports_divergence_as_one_error_line_and_exit_code_2(poison, tmp_path):
    poison(3, "loss")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *SMALL_FLAGS, "--out", str(run)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("simclip: error:")]
    assert len(errors) == 1, result.output
    assert "step 3" in errors[0] and f"{run / CHECKPOINT_FILENAME} (step 2)" in errors[0]
    assert "Traceback" not in result.output and not (run / "encoder.safetensors").exists()


# ------------------------------------------------------------------------- SIGKILL at a random step, then --resume

KILL_STEPS = 6
KILL_FLAGS = ["--steps", str(KILL_STEPS), "--batch-size", "4", "--train-size", "16", "--probe-size", "0",
              "--attack-steps", "10", "--warmup-steps", "1", "--save-every", "1", "--log-every", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _simclip_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "simclip_bench", "train", *args]


def _checkpointed_step(run: Path) -> int | None:
    """The step held by ``run``'s checkpoint, or None while there is none or it cannot be read just now."""
    try:
        return int(load_checkpoint(run)["step"])
    except (UserError, OSError, RuntimeError, EOFError):
        return None


def _wait_for_checkpoint(run: Path, step: int, proc: subprocess.Popen, timeout_s: float = 120) -> int | None:
    """Poll until ``run`` holds a checkpoint of ``step`` or later (reading it only when the file was replaced);
    the step found, or None when the process ended or ``timeout_s`` passed first."""
    path, read, deadline = run / CHECKPOINT_FILENAME, None, time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if version != read:
                found = _checkpointed_step(run)
                if found is not None:
                    read = version
                    if found >= step:
                        return found
        time.sleep(0.005)
    return None


def _encoder_bits(run: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """The encoder file's metadata and the raw bytes of each tensor. (Not the file's bytes: safetensors
    writes the metadata entries in an arbitrary order, different from one process to the next.)"""
    path = run / "encoder.safetensors"
    return read_safetensors_metadata(path), {k: t.numpy().tobytes() for k, t in load_safetensors(path).items()}


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_sigkill_at_a_random_step_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    seed = int(os.environ.get("SIMCLIP_KILL_SEED", time.time_ns() % 1_000_000))
    kill_at = random.Random(seed).randint(2, KILL_STEPS - 2)  # two steps to spare: the kill lands mid-run
    about = f"(kill seed {seed}: SIMCLIP_KILL_SEED={seed} replays it; kill after checkpoint {kill_at})"
    killed, whole = tmp_path / "killed", tmp_path / "whole"

    proc = subprocess.Popen(_simclip_train(*KILL_FLAGS, "--out", str(killed)), cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found = _wait_for_checkpoint(killed, kill_at, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert found is not None and proc.returncode == -signal.SIGKILL, f"training ended before the kill {about}"
    assert not (killed / "encoder.safetensors").exists(), about
    left_at = _checkpointed_step(killed)
    assert left_at is not None and found <= left_at < KILL_STEPS, f"checkpoint at step {left_at} {about}"

    uninterrupted = subprocess.Popen(_simclip_train(*KILL_FLAGS, "--out", str(whole)), cwd=tmp_path, env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resumed = subprocess.run(_simclip_train("--resume", str(killed)), cwd=tmp_path, env=ENV, capture_output=True,
                             text=True, timeout=300)
    _, whole_err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, whole_err[-2000:]
    assert resumed.returncode == 0, f"{about}\n{resumed.stderr[-2000:]}"
    assert _encoder_bits(killed) == _encoder_bits(whole), about
    assert not list(killed.glob(".*.tmp")), f"temporary files left behind {about}"
