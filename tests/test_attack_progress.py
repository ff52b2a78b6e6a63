"""Progress that never goes silent: the attacks say where they are (which attack, which target or restart,
iteration k of n, samples still attacked), the time left counts the runs and settings still to come, and a plain
log gets a line at least every SIMCLIP_PROGRESS_SECONDS while a batch runs, however long the batch is."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from rich.console import Console
from rich.progress import Progress

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.base import ClassifierObjective
from simclip_bench.attacks.ensemble import run_ensemble
from simclip_bench.attacks.registry import AttackSpec, EnsembleSpec
from simclip_bench.attacks.rng import sample_seeds
from simclip_bench.attacks.square import square_attack
from simclip_bench.cli import plain_progress
from simclip_bench.cli.plain_progress import PlainProgress
from simclip_bench.cli.reporting import RichReporter

PHASE = r"(apgd-ce|apgd-t target \d+/\d+), iteration \d+/\d+, \d+ of \d+ samples attacked"


def _heard() -> tuple[list[attack_progress.AttackStatus], object]:
    heard: list[attack_progress.AttackStatus] = []
    return heard, attack_progress.listening(heard.append)


def test_an_ensemble_reports_each_run_its_target_its_iterations_and_the_samples_it_still_attacks(
        zero_shot_head, shapes_test):
    x, y = shapes_test.tensors(list(range(16)))
    spec = EnsembleSpec("apgd-ce+apgd-t", (AttackSpec("apgd-ce", "apgd", "ce", 6),
                                            AttackSpec("apgd-t", "apgd", "dlr-targeted", 4, n_targets=2)))
    heard, listening = _heard()
    with listening:
        run_ensemble(spec, zero_shot_head, x, y, 0.5 / 255)
    runs = list(dict.fromkeys(s.attack for s in heard))
    assert runs[0] == "apgd-ce" and set(runs[1:]) <= {"apgd-t target 1/2", "apgd-t target 2/2"}
    ce = [s for s in heard if s.attack == "apgd-ce"]
    assert [s.iteration for s in ce[1:]] == list(range(1, len(ce)))  # CPU: one report per iteration
    assert ce[-1].n_iter == 6 and all(0 <= s.running <= s.samples <= 16 for s in heard)
    assert re.fullmatch(PHASE, heard[-1].describe())


def test_without_a_listener_the_attacks_report_to_nobody(zero_shot_head, shapes_test):
    x, y = shapes_test.tensors(list(range(4)))
    attack_progress.advanced(1, 4)  # no tracker: returns at once, keeps nothing
    run_ensemble(EnsembleSpec("apgd-ce", (AttackSpec("apgd-ce", "apgd", "ce", 2),)), zero_shot_head, x, y, 1 / 255)


def test_square_reports_every_query_round_with_the_samples_not_yet_fooled(zero_shot_head, shapes_test):
    x, y = shapes_test.tensors(list(range(8)))
    heard, listening = _heard()
    with listening:
        attack_progress.plan([("square", 20)])
        attack_progress.run("square", len(x))
        square_attack(ClassifierObjective(zero_shot_head, y, "margin"), x, torch.arange(8), 1 / 255,
                      sample_seeds(0, torch.arange(8)), n_queries=20)
    assert [s.iteration for s in heard[1:]] == list(range(1, len(heard)))
    assert heard[-1].n_iter == 20 and heard[-1].running <= 8


def test_the_time_left_counts_the_run_the_later_runs_and_the_later_settings(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(attack_progress.time, "monotonic", lambda: clock[0])
    heard, listening = _heard()
    with listening:
        attack_progress.batch(4, ["2/255", "4/255"])
        attack_progress.setting("2/255")
        attack_progress.plan([("apgd-ce", 10), ("apgd-t target 1/1", 10)])
        attack_progress.run("apgd-ce", 4)
        attack_progress.stream(4)
        clock[0] += 5.0
        attack_progress.advanced(5, 4)  # 5 iterations x 4 samples in 5 s: 0.25 s per sample-iteration
    status = heard[-1]
    # this run: 4 samples x 5 iterations left; the next run: 4 x 10; that is 60 x 0.25 = 15 s; then 4/255, as
    # long as 2/255 (5 s spent + 15 s left)
    assert status.seconds_left == pytest.approx(15 + 20)
    assert status.describe() == "2/255: apgd-ce, iteration 5/10, 4 of 4 samples attacked"
    assert status.batch_samples == 4 and status.batch_elapsed == pytest.approx(5.0)


def test_a_restart_and_a_sample_fooled_shorten_the_time_left(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(attack_progress.time, "monotonic", lambda: clock[0])
    heard, listening = _heard()
    with listening:
        attack_progress.plan([("apgd-ce", 2 * 10)])  # 2 restarts of 10 iterations
        attack_progress.run("apgd-ce", 4)
        attack_progress.stream(4, restart=0, restarts=2)
        clock[0] = 10.0
        attack_progress.advanced(10, 2)  # 40 sample-iterations in 10 s; 2 samples left for the 2nd restart
        attack_progress.stream(2, restart=1, restarts=2)
        attack_progress.advanced(0, 2)
    assert heard[-1].restart == "restart 2/2" and heard[-1].running == 2
    assert heard[-1].seconds_left == pytest.approx(2 * 10 * 0.25)


def _plain(interval: float) -> tuple[PlainProgress, io.StringIO]:
    out = io.StringIO()
    return PlainProgress(Console(file=out, width=400), interval=interval), out


def test_a_plain_log_gets_a_line_every_interval_while_a_line_runs_without_moving():
    bar, out = _plain(0.2)
    with bar:
        reporter = RichReporter(bar, notices=Console(file=io.StringIO()))
        reporter.start("tiny-clip shapes", total=10)
        time.sleep(1.1)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4 and all(" 0/10 (0%)" in line for line in lines), lines


def test_the_line_names_the_attack_phase_and_the_eta_counts_what_is_left(monkeypatch):
    bar, out = _plain(0.2)
    with bar, attack_progress.listening(lambda s: reporter.attack_status(s)):
        reporter = RichReporter(bar, notices=Console(file=io.StringIO()))
        reporter.start("tiny-clip shapes", total=8)
        attack_progress.batch(4, ["4/255"])
        attack_progress.setting("4/255")
        attack_progress.plan([("apgd-ce", 100)])
        attack_progress.run("apgd-ce", 4)
        attack_progress.stream(4)
        time.sleep(0.3)
        attack_progress.advanced(10, 3)
        time.sleep(0.5)
    line = out.getvalue().splitlines()[-1]
    assert re.search(r" 0/8 \(0%\) ETA \d+s \| 4/255: apgd-ce, iteration 10/100, 3 of 4 samples attacked$", line), line


def test_a_lines_eta_is_the_rest_of_its_batch_and_its_other_samples_at_the_batchs_pace(monkeypatch):
    bar = Progress()
    status = attack_progress.AttackStatus(setting="4/255", attack="apgd-ce", restart="", iteration=5, n_iter=10,
                                          running=4, samples=4, seconds_left=20.0, batch_samples=4,
                                          batch_elapsed=5.0, at=100.0)
    task = bar._tasks[bar.add_task("cell", total=12, completed=4, attack_status=status)]
    monkeypatch.setattr(plain_progress.time, "monotonic", lambda: 101.0)
    # 19 s left in this batch; the 4 samples after it at (5 s spent + 20 s left) / 4 samples each
    assert plain_progress.line_eta(task) == pytest.approx(19 + 4 * 25 / 4)


def test_when_the_batch_is_done_the_phase_is_dropped():
    bar, out = _plain(0)
    with bar, attack_progress.listening(lambda s: reporter.attack_status(s)):
        reporter = RichReporter(bar, notices=Console(file=io.StringIO()))
        line = reporter.start("cell", total=2)
        attack_progress.plan([("apgd-ce", 10)])
        attack_progress.run("apgd-ce", 1)
        reporter.advance(line, 1)
    assert "apgd-ce" not in out.getvalue().splitlines()[-1]


@pytest.mark.slow
def test_a_long_single_batch_eval_logged_to_a_file_names_the_attack_phase_every_second(tmp_path):
    log = tmp_path / "log.txt"
    env = {**os.environ, "SIMCLIP_PROGRESS_SECONDS": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:  # stdout and stderr into a file: no terminal, as under nohup or Slurm
        done = subprocess.run([sys.executable, "-m", "simclip_bench", "eval", "--model", "tiny-clip", "--n-samples",
                               "40", "--batch-size", "40", "--attack", "apgd-ce+apgd-t", "--eps", "1/255",
                               "--iterations", "50", "--out", "out"], cwd=tmp_path, stdout=f,
                              stderr=subprocess.STDOUT, env=env, timeout=900)
    lines = log.read_text().splitlines()
    assert done.returncode == 0, "\n".join(lines[-20:])
    phases = [line for line in lines if re.search(r"tiny-clip shapes 0/40 \(0%\) ETA \d\S* \| .*\| 1/255: " + PHASE,
                                                  line)]
    assert len(phases) >= 3, "\n".join(lines)
    assert any("apgd-t target" in line for line in phases)
