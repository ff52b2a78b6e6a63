"""Two evaluations writing into one store at once: every per-sample row and every result row exactly once."""
from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from simclip_bench.results.schema import RESULT_KEY, SAMPLE_COLUMNS, SAMPLE_KEY
from simclip_bench.results.store import append_samples, read_results, read_samples

KEY = ["model", "dataset", "setting", "sample_id"]
VOLATILE = ["run_id", "created_at", "seconds"]
# Big enough that the two processes are computing at the same time (a few seconds each after start-up).
GRID = ["--model", "tiny-clip", "--dataset", "shapes", "--n-samples", "120", "--iterations", "8", "--batch-size", "8",
        "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------ append_samples itself


def _sample(i: int, run_id: str = "r") -> dict:
    return {c: f"{c}{i}" for c in SAMPLE_COLUMNS} | {"run_id": run_id}


def test_rows_already_in_the_file_are_not_appended_again(tmp_path):
    append_samples(tmp_path, [_sample(0), _sample(1)])
    append_samples(tmp_path, [_sample(1, "again"), _sample(2, "again")])
    samples = read_samples(tmp_path)
    assert list(samples["sample_id"]) == ["sample_id0", "sample_id1", "sample_id2"]
    assert list(samples["run_id"]) == ["r", "r", "again"]  # the first row of a key stays


def test_a_key_repeated_within_one_batch_is_written_once(tmp_path):
    append_samples(tmp_path, [_sample(0, "first"), _sample(0, "second")])
    assert list(read_samples(tmp_path)["run_id"]) == ["first"]


def test_a_store_file_deleted_or_cut_behind_the_cache_is_read_again(tmp_path):
    append_samples(tmp_path, [_sample(0), _sample(1)])
    (tmp_path / "samples.csv").unlink()
    append_samples(tmp_path, [_sample(0)])
    assert list(read_samples(tmp_path)["sample_id"]) == ["sample_id0"]
    with open(tmp_path / "samples.csv", "r+") as f:  # same file, cut back to its header
        f.truncate(len(f.readline()))
    append_samples(tmp_path, [_sample(0), _sample(1)])
    assert list(read_samples(tmp_path)["sample_id"]) == ["sample_id0", "sample_id1"]


def _append_in_batches(out, rows: list[dict], start) -> None:
    start.wait()
    for i in range(0, len(rows), 5):
        append_samples(out, rows[i:i + 5])


def test_two_processes_appending_the_same_keys_leave_each_once(tmp_path):
    context = multiprocessing.get_context("fork")  # fast; the child only touches the CSV store
    start = context.Barrier(2)
    forward = [_sample(i, "forward") for i in range(60)]
    backward = [_sample(i, "backward") for i in reversed(range(60))]
    workers = [context.Process(target=_append_in_batches, args=(tmp_path, rows, start)) for rows in (forward, backward)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    samples = read_samples(tmp_path)
    assert len(samples) == 60 and not samples.duplicated(subset=list(SAMPLE_KEY)).any()


# ------------------------------------------------------------------------------ two `simclip eval` processes


def _command(out, eps: str) -> list[str]:
    return [sys.executable, "-m", "simclip_bench", "eval", *GRID, "--eps", eps, "--out", str(out)]


def _computed(stdout: str) -> int:
    return int(re.search(r"(\d+) samples computed", stdout).group(1))


def _run(*commands: list[str]) -> list[int]:
    """Start every command at once, wait for all; returns how many samples each computed."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for c in commands]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [_computed(" ".join(out.split())) for out, _ in outputs]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """Reference stores: grid 4/255 alone, and grid 4/255 followed by grid 8/255 (one after the other)."""
    root = tmp_path_factory.mktemp("sequential")
    _run(_command(root / "a", "4/255"))
    shutil.copytree(root / "a", root / "a-then-b")
    _run(_command(root / "a-then-b", "8/255"))
    return root / "a", root / "a-then-b"


def _samples(out) -> pd.DataFrame:
    samples = read_samples(out)
    assert not samples.duplicated(subset=KEY).any(), "a per-sample row was written twice"
    return samples.drop(columns=["run_id"]).sort_values(KEY).reset_index(drop=True)


def _results(out, volatile: list[str]) -> pd.DataFrame:
    results = read_results(out)
    assert not results.duplicated(subset=list(RESULT_KEY)).any(), "a result row was written twice"
    return results.drop(columns=volatile).sort_values(["attack", "eps_text"]).reset_index(drop=True)


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_the_same_grid_twice_at_once_writes_every_row_once(sequential, tmp_path):
    reference, _ = sequential
    out = tmp_path / "out"
    computed = _run(_command(out, "4/255"), _command(out, "4/255"))
    assert min(computed) > 0, f"the two runs did not overlap ({computed} samples computed)"
    pd.testing.assert_frame_equal(_samples(out), _samples(reference))
    pd.testing.assert_frame_equal(_results(out, VOLATILE), _results(reference, VOLATILE))


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_two_grids_at_once_equal_the_two_run_one_after_the_other(sequential, tmp_path):
    _, reference = sequential
    out = tmp_path / "out"
    _run(_command(out, "4/255"), _command(out, "8/255"))
    pd.testing.assert_frame_equal(_samples(out), _samples(reference))
    # The clean row is shared; its attack_config records the protocol (eps list) of whichever grid wrote it last.
    volatile = VOLATILE + ["attack_config"]
    assert len(read_results(out)) == 3  # clean, 4/255 and 8/255: neither process lost the other's row
    pd.testing.assert_frame_equal(_results(out, volatile), _results(reference, volatile))
