"""``--threads N`` and the one-line warning when torch's threads and other processes oversubscribe the CPUs."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.cli import threads as cli_threads

QUICK = ["--attack", "none", "--n-samples", "2", "--out", "out", "--device", "cpu"]


def test_busy_cpus_and_several_torch_threads_give_one_warning_line_with_the_fix():
    line = cli_threads.oversubscription(others=1.6, threads=2, cpus=2)
    assert line.startswith("simclip: warning:") and "other processes keep 1.6 CPUs busy, of 2" in line
    assert "--threads 1" in line and "\n" not in line
    assert cli_threads.oversubscription(others=0.0, threads=2, cpus=2) is None  # only this process: no neighbour
    assert cli_threads.oversubscription(others=5.0, threads=1, cpus=2) is None  # one thread: nothing to lower


def test_the_busy_cpus_are_measured_now_not_averaged_over_the_last_minute(monkeypatch):
    """A load average of 2 right after a command ended (it decays over a minute) is no neighbour: only CPU time
    spent in the sampling window counts, and this process's own time is not another's."""
    ticks = iter([1000, 1000 + 2 * 25])  # 2 CPUs busy for the whole window (100 ticks a second, 0.25 s)
    monkeypatch.setattr(cli_threads, "_busy_ticks", lambda cpus: next(ticks))
    monkeypatch.setattr(cli_threads.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    own = iter([10.0, 10.25])  # ... one of them this process
    monkeypatch.setattr(cli_threads.time, "process_time", lambda: next(own))
    clock = iter([0.0, 0.25])
    monkeypatch.setattr(cli_threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(cli_threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(cli_threads.os, "sysconf", lambda name: 100)
    assert cli_threads.busy_elsewhere() == pytest.approx(1.0)


def test_the_measure_counts_cpus_and_runs_on_this_machine():
    # measured, not mocked (neighbours may run): other processes cannot keep more CPUs busy than there are
    assert 0.0 <= cli_threads.busy_elsewhere(0.1) <= cli_threads.usable_cpus() + 0.5


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
    monkeypatch.setattr(cli_threads, "busy_elsewhere", lambda: 1.8)
    monkeypatch.setattr(cli_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(app, ["eval", "--n-samples", "0"])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    result = CliRunner().invoke(app, ["eval", *QUICK])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("simclip: warning: the machine is busy")]
    assert len(warnings) == 1 and "other processes keep 1.8 CPUs busy, of 2" in warnings[0]
    assert result.output.index(warnings[0]) < result.output.index("zero-shot accuracy")
