"""``--balance dynamic``: processes claim chunks of a cell from the store as they go.

A slow worker does fewer chunks, a killed worker's chunk is taken over, and the tables equal one process's.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_scaleout import _run_at_once  # every command at once, their stdouts

from simclip_bench.jobs.claims import CLAIMS_FILE, ChunkClaims, Worker
from simclip_bench.results.store import read_results

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
for _name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_ARRAY_TASK_ID"):
    ENV.pop(_name, None)
HOST = socket.gethostname()
KEY = ["model", "dataset", "setting", "sample_id"]
VOLATILE = ["run_id", "created_at", "seconds"]
# 20 samples in chunks of 2: ten chunks to share
GRID = ["--model", "tiny-clip", "--dataset", "shapes", "--n-samples", "20", "--iterations", "2", "--batch-size", "2",
        "--eps", "4/255", "--device", "cpu", "--threads", "1"]
# A worker on a slow GPU: every batch of the model's work takes 2 s longer.
SLOW = ("import time, simclip_bench.tasks.zeroshot as z; work = z._outcomes; "
        "z._outcomes = lambda *a, **k: (time.sleep(2.0), work(*a, **k))[1]; "
        "from simclip_bench.cli import main; main()")


# ------------------------------------------------------------------------------------------ the claims file


def _live_pid() -> int:
    return os.getppid()  # the test runner's parent: alive for as long as the test runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _claims(tmp_path: Path, me: Worker, n: int = 10, chunk: int = 2, **kw) -> ChunkClaims:
    return ChunkClaims(tmp_path, "cell", n, chunk, me, **kw)


def test_two_processes_claim_every_chunk_once(tmp_path):
    a = _claims(tmp_path, Worker("single", HOST, os.getpid(), "a"))
    b = _claims(tmp_path, Worker("single", HOST, _live_pid(), "b"))
    taken = [a.claim(), b.claim(), a.claim(), b.claim(), a.claim(), b.claim(), a.claim()]
    assert taken == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), None, None]


def test_a_chunk_done_in_the_store_before_the_cell_began_is_not_claimed(tmp_path):
    claims = _claims(tmp_path, Worker.this(), already_done=lambda start, stop: start < 6)
    assert [claims.claim(), claims.claim(), claims.claim()] == [(6, 8), (8, 10), None]


def test_a_dead_workers_claim_on_this_machine_is_taken_over_at_once(tmp_path):
    _claims(tmp_path, Worker("single", HOST, _dead_pid(), "x")).claim()
    assert _claims(tmp_path, Worker.this()).claim() == (0, 2)


def test_a_done_chunk_stays_done_after_its_worker_died(tmp_path):
    dead = _claims(tmp_path, Worker("single", HOST, _dead_pid(), "x"))
    dead.finish(dead.claim())
    assert _claims(tmp_path, Worker.this()).claim() == (2, 4)


def test_a_claim_from_another_machine_lapses_after_the_lease(tmp_path):
    _claims(tmp_path, Worker("single", "elsewhere", 1, "x"), clock=lambda: 0.0).claim()
    assert _claims(tmp_path, Worker.this(), lease_s=100, clock=lambda: 50.0).claim() == (2, 4)
    assert _claims(tmp_path, Worker.this(), lease_s=100, clock=lambda: 150.0).claim() == (0, 2)


def test_a_rerun_of_the_same_worker_elsewhere_takes_its_chunks_back(tmp_path):
    _claims(tmp_path, Worker("--shard 3/8", "node-a", 1, "x")).claim()
    assert _claims(tmp_path, Worker("--shard 2/8", HOST, os.getpid(), "y")).claim() == (2, 4)
    assert _claims(tmp_path, Worker("--shard 3/8", HOST, os.getpid(), "z")).claim() == (0, 2)


def test_a_line_cut_by_a_crash_claims_nothing_and_breaks_nothing(tmp_path):
    _claims(tmp_path, Worker.this()).claim()
    with open(tmp_path / CLAIMS_FILE, "a") as f:
        f.write("claim,cell,2,4,single,")  # killed mid-line
    other = _claims(tmp_path, Worker("single", HOST, _live_pid(), "b"))
    assert [other.claim(), other.claim()] == [(2, 4), (4, 6)]
    assert len(pd.read_csv(tmp_path / CLAIMS_FILE, on_bad_lines="skip")) >= 3


# --------------------------------------------------------------------------- workers into one store, end to end


def _eval(out: Path, *extra: str, slow: bool = False) -> list[str]:
    head = [sys.executable, "-c", SLOW] if slow else [sys.executable, "-m", "simclip_bench"]
    return [*head, "eval", *GRID, "--out", str(out), *extra]



def _computed(stdout: str) -> int:
    return int(re.search(r"(\d+) samples computed", stdout).group(1))


def _table(out: Path) -> pd.DataFrame:
    results = read_results(out)
    assert not results.duplicated(subset=["model", "dataset", "setting"]).any()
    return results.drop(columns=VOLATILE).sort_values(["setting"]).reset_index(drop=True)


def _samples(out: Path) -> pd.DataFrame:
    samples = pd.read_csv(out / "samples.csv", dtype=str, keep_default_na=False)
    assert not samples.duplicated(subset=KEY).any(), "a per-sample row was written twice"
    return samples.drop(columns=["run_id"]).sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    _run_at_once(_eval(out))
    return out


@pytest.mark.slow
def test_a_slow_worker_takes_fewer_chunks_and_the_table_is_one_processs(single, tmp_path):
    out = tmp_path / "out"
    fast, slow = _run_at_once(_eval(out, "--balance", "dynamic"), _eval(out, "--balance", "dynamic", slow=True))
    assert _computed(fast) + _computed(slow) == 20  # every sample once
    assert _computed(slow) < 10 < _computed(fast)  # the static interleave would give each 10
    pd.testing.assert_frame_equal(_table(out), _table(single))
    pd.testing.assert_frame_equal(_samples(out), _samples(single))


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


@pytest.mark.slow
def test_a_killed_dynamic_worker_is_finished_by_a_rerun_computing_nothing_twice(single, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_eval(out, "--balance", "dynamic", slow=True), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 120
    while _rows(out / "samples.csv") < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _rows(out / "samples.csv")  # two rows per sample: clean and 4/255
    assert 0 < killed_at < 40, "the kill must land midway"
    assert not (out / "results.csv").exists()
    # its claim on the chunk it was working on is dead: a second worker and a re-run finish the cell
    rerun, other = _run_at_once(_eval(out, "--balance", "dynamic"), _eval(out, "--balance", "dynamic", slow=True))
    assert _computed(rerun) + _computed(other) == 20 - killed_at // 2
    pd.testing.assert_frame_equal(_table(out), _table(single))
    pd.testing.assert_frame_equal(_samples(out), _samples(single))


def _plan(dataset: str = "shapes"):
    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.attacks.registry import resolve_attack
    from simclip_bench.data.catalog import open_source
    from simclip_bench.tasks.zeroshot import CellPlan

    return CellPlan(open_source(dataset), [0, 1, 2, 3], resolve_attack("apgd-ce"), [parse_eps("4/255", "linf")])


def test_the_claims_token_follows_every_column_of_the_sample_key(monkeypatch):
    # when the key gains a column (say, a fingerprint of the dataset's files), cells that differ only there must
    # not share claims: the token is read off the key columns of a row built as the cell builds its rows
    import types

    import simclip_bench.results.schema as schema
    import simclip_bench.tasks.zeroshot_rows as zeroshot_rows
    from simclip_bench.jobs.claims import zeroshot_identity

    model = types.SimpleNamespace(model_id="m", checkpoint_hash="h", text_hash="t")
    assert zeroshot_identity(model, _plan("shapes")) != zeroshot_identity(model, _plan("shape-colors"))
    other_text = types.SimpleNamespace(model_id="m", checkpoint_hash="h", text_hash="u")  # edited templates
    assert zeroshot_identity(model, _plan()) != zeroshot_identity(other_text, _plan())
    fingerprint = {"value": "a"}
    rows = zeroshot_rows.sample_rows
    monkeypatch.setattr(zeroshot_rows, "sample_rows",
                        lambda *a: [r | {"fingerprint": fingerprint["value"]} for r in rows(*a)])
    monkeypatch.setattr(schema, "SAMPLE_KEY", (*schema.SAMPLE_KEY, "fingerprint"))
    first = zeroshot_identity(model, _plan())
    fingerprint["value"] = "b"
    assert zeroshot_identity(model, _plan()) != first
