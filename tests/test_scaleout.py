"""Scale-out of ``simclip eval``: shards from --shard, torchrun or Slurm; N processes give one process's table."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from simclip_bench.errors import UserError
from simclip_bench.jobs.shards import SINGLE, Shard, detect_shard, launcher_notices, parse_shard
from simclip_bench.results.store import read_results

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
for _name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_ARRAY_TASK_ID",
              "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"):
    ENV.pop(_name, None)  # the tests say which launcher they imitate
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
VOLATILE_RESULTS = ["run_id", "created_at", "seconds"]
KEY = ["model", "dataset", "setting", "sample_id"]
ZEROSHOT = ["--model", "tiny-clip", "--dataset", "shapes", "--n-samples", "20", "--iterations", "2", "--batch-size",
            "4", "--eps", "4/255", "--device", "cpu", "--threads", "1"]
# the fast protocol with its audit on half the samples: the audited rows are split between the shards too
FAST = [*ZEROSHOT, "--protocol", "fast", "--audit-fraction", "0.5"]
# the reference backend draws random starts over a whole batch: its shards must take one process's batches
REFERENCE = ["--model", "tiny-clip", "--dataset", "shapes", "--n-samples", "24", "--iterations", "1", "--batch-size",
             "6", "--eps", "4/255", "--attack", "ref:apgd-ce", "--device", "cpu", "--threads", "1"]
CAPTIONING = ["--task", "captioning", "--model", "tiny-clip", "--n-samples", "6", "--iterations", "2",
              "--batch-size", "2", "--eps", "4/255", "--device", "cpu", "--threads", "1"]


# ----------------------------------------------------------------------------------------- which shard am I


def test_shard_k_of_n_is_parsed():
    assert parse_shard("3/8") == Shard(3, 8, source="--shard")


@pytest.mark.parametrize("text", ["8/8", "-1/2", "1", "a/b", "1/0", "1/2/3"])
def test_a_shard_outside_0_to_n_minus_1_is_a_user_error(text):
    with pytest.raises(UserError, match="--shard"):
        parse_shard(text)


def test_the_interleaved_parts_cover_every_position_once():
    items = list(range(23))
    parts = [Shard(k, 5).take(items) for k in range(5)]
    assert sorted(i for p in parts for i in p) == items
    assert parts[2] == [2, 7, 12, 17, 22]


def test_no_launcher_means_the_whole_grid():
    assert detect_shard(None, {}) == SINGLE


def test_torchrun_variables_give_rank_of_world_size_and_the_gpu():
    env = {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}
    assert detect_shard(None, env) == Shard(5, 16, 1, "torchrun")


def test_an_explicit_shard_wins_but_keeps_the_launchers_gpu():
    assert detect_shard("0/2", {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}) == Shard(0, 2, 1, "--shard")


def test_a_slurm_array_without_shard_evaluates_its_whole_grid_and_says_so():
    # an array element cannot know how many elements share its grid: it never splits on its own
    for env in ({"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "17"},
                {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"},
                {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1"}):  # sbatch --array=3, re-submitted
        assert detect_shard(None, env) == SINGLE
        notice, = launcher_notices(None, env)
        assert "Slurm array task" in notice and "--shard $SLURM_ARRAY_TASK_ID/N" in notice


def test_an_array_shards_with_an_explicit_shard_even_when_re_submitted_alone():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1"}
    assert detect_shard("3/8", env) == Shard(3, 8, None, "--shard")
    assert launcher_notices("3/8", env) == []


def test_srun_tasks_split_the_grid_of_their_array_element():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "3",
           "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "3"}
    assert detect_shard(None, env) == Shard(3, 4, 3, "srun")
    assert "split over the 4 srun processes" in launcher_notices(None, env)[0]


def test_a_shard_given_to_every_process_of_a_launcher_is_noticed():
    notice, = launcher_notices("1/2", {"RANK": "0", "WORLD_SIZE": "4"})
    assert "all 4 torchrun processes" in notice
    assert launcher_notices(None, {"RANK": "0", "WORLD_SIZE": "4"}) == []


def test_reference_shards_take_whole_batches_of_one_process():
    items = list(range(23))
    parts = [Shard(k, 2).take_batches(items, 5) for k in range(2)]
    assert parts == [[0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22], [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]]
    assert Shard(1, 2).part(items, 5, whole_batches=False) == Shard(1, 2).take(items)


def test_the_batch_script_outside_srun_is_one_process():
    # sbatch --ntasks 8 sets SLURM_NTASKS, but a plain `python` line in the script is one process
    assert detect_shard(None, {"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == SINGLE


# ------------------------------------------------------------------------- N processes, one process's table


def _eval(out: Path, args: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "simclip_bench", "eval", *args, "--out", str(out), *extra]


def _torchrun(out: Path, args: list[str]) -> list[str]:
    return [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "simclip_bench", "eval", *args, "--out", str(out)]


def _run_at_once(*commands: list[str]) -> list[str]:
    """Start every command at once and wait for all; returns their stdouts (one line each)."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for c in commands]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [" ".join(out.split()) for out, _ in outputs]


def _samples_file(args: list[str]) -> str:
    return "vlm_samples.csv" if "--task" in args else "samples.csv"


def _table(out: Path) -> pd.DataFrame:
    results = read_results(out)
    assert not results.duplicated(subset=["model", "dataset", "setting"]).any(), "a result row was written twice"
    # The working batch that ran the cell (recorded beside the setting) is how it ran, like the device: not compared.
    results["attack_config"] = [json.dumps({k: v for k, v in json.loads(c).items() if k != "batch_size"},
                                           sort_keys=True) for c in results["attack_config"]]
    return results.drop(columns=VOLATILE_RESULTS).sort_values(["setting"]).reset_index(drop=True)


def _samples(out: Path, args: list[str]) -> pd.DataFrame:
    samples = pd.read_csv(out / _samples_file(args), dtype=str, keep_default_na=False)
    assert not samples.duplicated(subset=KEY).any(), "a per-sample row was written twice"
    return samples.drop(columns=["run_id"]).sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process's store of each grid: the reference."""
    root = tmp_path_factory.mktemp("single")
    _run_at_once(*[_eval(root / name, args) for name, args in GRIDS.items()])
    return {name: root / name for name in GRIDS}


GRIDS = {"zeroshot": ZEROSHOT, "captioning": CAPTIONING, "fast": FAST, "reference": REFERENCE}


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
@pytest.mark.parametrize("grid", GRIDS)
def test_two_shards_at_once_write_one_processs_table(single, tmp_path, grid):
    args = GRIDS[grid]
    out = tmp_path / "out"
    stdouts = _run_at_once(_eval(out, args, "--shard", "0/2"), _eval(out, args, "--shard", "1/2"))
    pd.testing.assert_frame_equal(_table(out), _table(single[grid]))
    pd.testing.assert_frame_equal(_samples(out, args), _samples(single[grid], args))
    if grid == "zeroshot":  # the parts are disjoint: together they computed each sample once
        computed = [int(re.search(r"(\d+) samples computed", s).group(1)) for s in stdouts]
        assert computed == [10, 10]
        pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(single[grid] / "summary.csv"))
    if grid == "fast":  # the audit spans both shards' samples
        assert _table(out)["audit_n"].dropna().tolist() == [10]


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
@pytest.mark.parametrize("grid", GRIDS)
def test_two_processes_under_torchrun_write_one_processs_table(single, tmp_path, grid):
    args = GRIDS[grid]
    out = tmp_path / "out"
    _run_at_once(_torchrun(out, args))
    pd.testing.assert_frame_equal(_table(out), _table(single[grid]))
    pd.testing.assert_frame_equal(_samples(out, args), _samples(single[grid], args))


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_a_shard_killed_midway_is_finished_by_running_it_again(single, tmp_path):
    out = tmp_path / "out"
    at = ZEROSHOT.index("--batch-size") + 1
    slow = [*ZEROSHOT[:at], "1", *ZEROSHOT[at + 1:]]  # one sample per append: many chances to land midway
    _run_at_once(_eval(out, slow, "--shard", "0/2"))
    assert not (out / "results.csv").exists(), "half a cell must not make a table"
    before = _rows(out / "samples.csv")
    proc = subprocess.Popen(_eval(out, slow, "--shard", "1/2"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ENV)
    deadline = time.time() + 120
    while _rows(out / "samples.csv") < before + 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _rows(out / "samples.csv")
    assert before < killed_at < 2 * before, "the kill must land midway through the shard"
    assert not (out / "results.csv").exists()

    rerun, = _run_at_once(_eval(out, slow, "--shard", "1/2"))
    assert f"{(2 * before - killed_at) // 2} samples computed" in rerun  # nothing done twice
    pd.testing.assert_frame_equal(_table(out), _table(single["zeroshot"]))
    pd.testing.assert_frame_equal(_samples(out, ZEROSHOT), _samples(single["zeroshot"], ZEROSHOT))


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_an_array_element_without_shard_evaluates_its_whole_grid_and_says_so(tmp_path):
    # e.g. an array that spreads models over jobs: each element's grid is its own, never a quarter of it
    env = {**ENV, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    proc = subprocess.run(_eval(tmp_path / "out", ZEROSHOT), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "20 samples computed" in " ".join(proc.stdout.split())
    notices = " ".join(proc.stderr.split())
    assert notices.count("Slurm array task 2 without --shard") == 1
    assert (tmp_path / "out" / "results.csv").exists()


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_shards_in_separate_stores_merge_into_one_processs_table(single, tmp_path):
    # where file locks cannot be trusted across machines: one store per shard, then --merge-from
    _run_at_once(_eval(tmp_path / "a", ZEROSHOT, "--shard", "0/2"), _eval(tmp_path / "b", ZEROSHOT, "--shard", "1/2"))
    merged, = _run_at_once(_eval(tmp_path / "all", ZEROSHOT, "--merge-from", str(tmp_path / "a"),
                                 "--merge-from", str(tmp_path / "b")))
    assert "0 samples computed, 20 reused" in merged
    pd.testing.assert_frame_equal(_table(tmp_path / "all"), _table(single["zeroshot"]))
    pd.testing.assert_frame_equal(_samples(tmp_path / "all", ZEROSHOT), _samples(single["zeroshot"], ZEROSHOT))
