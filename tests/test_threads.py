"""``--threads N`` and the one-line warning when torch's threads and other processes oversubscribe the CPUs."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.cli import threads as cli_threads

QUICK = ["--attack", "none", "--n-samples", "2", "--out", "out", "--device", "cpu"]


def test_busy_cpus_and_several_torch_threads_give_one_warning_line_with_the_fix():
    line = cli_threads.oversubscription(load=2.6, threads=2, cpus=2)
    assert line.startswith("simclip: warning:") and "load average 2.6 on 2 CPUs" in line and "--threads 1" in line
    assert "\n" not in line
    assert cli_threads.oversubscription(load=1.0, threads=2, cpus=2) is None  # only this process: no neighbour
    assert cli_threads.oversubscription(load=6.0, threads=1, cpus=2) is None  # one thread: nothing to lower


@pytest.mark.parametrize("command", ["eval", "train", "attack", "bench"])
def test_threads_is_an_option_of_every_command_that_computes(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "--threads" in result.output


def test_threads_sets_torchs_thread_count(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--threads", "1", *QUICK])
    assert result.exit_code == 0, result.output
    assert calls == [1]


def test_the_busy_machine_warning_comes_once_when_work_starts_never_before_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_threads, "_warned", False)
    monkeypatch.setattr(cli_threads.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    monkeypatch.setattr(cli_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(app, ["eval", "--n-samples", "0"])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    result = CliRunner().invoke(app, ["eval", *QUICK])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("simclip: warning: the machine is busy")]
    assert len(warnings) == 1 and "load average 6.0 on 2 CPUs" in warnings[0]
    assert result.output.index(warnings[0]) < result.output.index("zero-shot accuracy")
