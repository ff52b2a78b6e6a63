"""DDP through torchrun: 2 CPU processes (gloo) train as one process would on the same global batch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simclip_bench.models.checkpoint import load_safetensors
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.loop import train

ARGS = ["--steps", "3", "--batch-size", "8", "--train-size", "32", "--probe-size", "0", "--attack-steps", "2",
        "--warmup-steps", "1", "--log-every", "1", "--device", "cpu"]


def _same_training(a: dict, b: dict) -> None:
    """Equal up to float noise: Adam turns rounding-level gradient differences on near-zero gradients into
    differences of up to ~lr on a few weights, so allow 1 % of them to differ by more than 1e-5.
    (Training on half of the batch instead changes 99 % of them.)"""
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert a.keys() == b.keys()
    assert float((diff > 1e-5).float().mean()) < 0.01, f"{float((diff > 1e-5).float().mean()):.1%} of weights differ"


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return [exe, "--standalone", "--nproc_per_node", "2", "-m", "simclip_bench", "train"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(_torchrun() + ARGS + ["--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_both_ranks_end_with_the_same_weights(ddp_run):
    summary = json.loads((ddp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True


def test_global_batch_is_per_rank_batch_times_world_size(ddp_run):
    config = json.loads((ddp_run / "config.json").read_text())
    assert config["world_size"] == 2 and config["per_rank_micro_batch"] * 2 == config["batch_size"] == 8


def test_two_processes_match_one_process_on_the_same_global_batch(ddp_run, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, train_size=32, probe_size=0, attack_steps=2, warmup_steps=1,
                      device="cpu", out=str(tmp_path / "single"))
    single = train(cfg, log=lambda *_: None)
    _same_training(load_safetensors(ddp_run / "encoder.safetensors"), load_safetensors(single / "encoder.safetensors"))


def test_accumulation_matches_one_big_batch(tmp_path):
    common = dict(steps=2, batch_size=8, train_size=32, probe_size=0, attack_steps=2, warmup_steps=1, device="cpu")
    one = train(TrainConfig(out=str(tmp_path / "one"), **common), log=lambda *_: None)
    acc = train(TrainConfig(out=str(tmp_path / "acc"), accum_steps=4, **common), log=lambda *_: None)
    _same_training(load_safetensors(one / "encoder.safetensors"), load_safetensors(acc / "encoder.safetensors"))


def test_training_on_half_the_batch_is_told_apart(tmp_path):
    """Guards the two tests above: the comparison does fail when the data differ."""
    common = dict(steps=2, train_size=32, probe_size=0, attack_steps=2, warmup_steps=1, device="cpu")
    full = train(TrainConfig(out=str(tmp_path / "full"), batch_size=8, **common), log=lambda *_: None)
    half = train(TrainConfig(out=str(tmp_path / "half"), batch_size=4, **common), log=lambda *_: None)
    with pytest.raises(AssertionError, match="differ"):
        _same_training(load_safetensors(full / "encoder.safetensors"), load_safetensors(half / "encoder.safetensors"))
