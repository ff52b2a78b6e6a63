"""The zero-shot benchmark: a grid of models x datasets on identical samples, its summary, and resume after SIGKILL."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from _shapes_folder import write_shapes_folder

from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_samples

VOLATILE = ["run_id", "created_at", "seconds"]
KEY = ["model", "dataset", "setting", "sample_id"]


@pytest.fixture(scope="module")
def other_model(perturbed_encoder):
    return str(perturbed_encoder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(write_shapes_folder(tmp_path_factory.mktemp("ds") / "shapes-folder", per_class=3))


@pytest.fixture(scope="module")
def grid(tmp_path_factory, other_model, folder):
    out = tmp_path_factory.mktemp("grid")
    request = EvalRequest(models=["tiny-clip", other_model], datasets=["shapes", folder], n_samples=16, n_iter=3,
                          eps=["4/255"], batch_size=8, out=out, device="cpu")
    return run_eval(request), out


def test_grid_has_a_row_per_model_dataset_and_eps(grid):
    result, _ = grid
    table = pd.DataFrame(result.rows)
    assert len(table) == 2 * 2 * 2  # models x datasets x (clean, 4/255)
    assert set(table["protocol"]) == {"default"}
    assert all('"resolved_protocol"' in c for c in table["attack_config"])


def test_models_are_compared_on_identical_sample_ids(grid):
    _, out = grid
    samples = read_samples(out)
    for _, part in samples.groupby(["dataset", "setting"]):
        by_model = part.groupby("model")["sample_id"].apply(frozenset)
        assert len(by_model) == 2 and by_model.iloc[0] == by_model.iloc[1]


def test_summary_average_is_the_mean_over_datasets_with_an_interval(grid):
    result, _ = grid
    table = pd.DataFrame(result.rows)
    for _, s in result.summary.iterrows():
        values = table[(table["model"] == s["model"]) & (table["eps_text"] == s["eps"])]["value"]
        assert s["average"] == pytest.approx(values.mean())
        assert s["ci_low"] <= s["average"] <= s["ci_high"]


def test_paired_difference_is_the_accuracy_gap_on_shared_samples(grid, other_model):
    result, _ = grid
    table = pd.DataFrame(result.rows)
    paired = result.paired
    assert set(paired["baseline"]) == {"tiny-clip"}
    for _, p in paired[paired["dataset"] != "average"].iterrows():
        acc = table[(table["dataset"] == p["dataset"]) & (table["eps_text"] == p["eps"])].set_index("model")["value"]
        assert p["difference"] == pytest.approx(acc[other_model] - acc["tiny-clip"])
    average = paired[paired["dataset"] == "average"]
    assert len(average) == 2  # clean and 4/255
    assert (average["ci_low"] <= average["difference"]).all() and (average["difference"] <= average["ci_high"]).all()


def test_rerunning_a_finished_grid_computes_nothing(grid, other_model, folder):
    result, out = grid
    again = run_eval(EvalRequest(models=["tiny-clip", other_model], datasets=["shapes", folder], n_samples=16,
                                 n_iter=3, eps=["4/255"], batch_size=8, out=out, device="cpu"))
    assert again.computed == 0 and again.reused == 2 * 2 * 16
    assert len(pd.read_csv(out / "results.csv")) == 8  # replaced, not duplicated


def _command(out, other_model, folder):
    return [sys.executable, "-m", "simclip_bench", "eval", "--model", "tiny-clip", "--model", other_model,
            "--dataset", "shapes", "--dataset", folder, "--n-samples", "16", "--iterations", "3", "--batch-size", "4",
            "--eps", "4/255", "--out", str(out), "--device", "cpu"]


def _rows_written(out) -> int:
    path = out / "samples.csv"
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


@pytest.mark.slow  # a subprocess run (or several): minutes on a 2-core machine
def test_sigkill_midway_then_rerun_gives_the_uninterrupted_table(tmp_path, other_model, folder):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_command(whole, other_model, folder), check=True, capture_output=True, env=env, timeout=900)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(killed, other_model, folder), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    total_rows = _rows_written(whole)
    deadline = time.time() + 600
    while _rows_written(killed) < total_rows // 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = read_samples(killed)
    assert 0 < len(done_before) < total_rows, "the kill must land midway through the grid"

    rerun = subprocess.run(_command(killed, other_model, folder), check=True, capture_output=True, text=True,
                           env=env, timeout=900)
    samples = read_samples(killed)
    assert not samples.duplicated(subset=KEY).any(), "a sample already in the store was computed again"
    assert len(samples) == total_rows
    assert f"{(len(samples) - len(done_before)) // 2} samples computed" in " ".join(rerun.stdout.split())

    def table(out):
        frame = pd.read_csv(out / "results.csv").drop(columns=VOLATILE)
        return frame.sort_values(["model", "dataset", "eps_text"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(killed), table(whole))
    per_sample = ["model", "dataset", "setting", "sample_id", "clean_pred", "adv_pred", "adv_correct", "fooled_by"]
    pd.testing.assert_frame_equal(samples[per_sample].sort_values(KEY).reset_index(drop=True),
                                  read_samples(whole)[per_sample].sort_values(KEY).reset_index(drop=True))
