"""``simclip bench``: a suite runs every task runner, then replaces OUT's result files and renders the leaderboard."""
from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from _leaderboard_data import model_rows, write_results

from simclip_bench.errors import UserError
from simclip_bench.jobs import bench, suites
from simclip_bench.results.store import upsert_results

SUITE = suites.Suite("test", "a test suite", objectives=(), tasks=("zeroshot",), protocol="default")


def _fake_zeroshot(ctx: suites.TaskContext) -> None:
    """Stands in for the real evaluation: rows for each model, as run_eval would append them."""
    rows = [r for i, m in enumerate(ctx.models) for r in model_rows(m, 0.9 - i / 10, 0.5, 0.2 + i / 10)]
    upsert_results(ctx.out, rows)
    (ctx.out / "samples.csv").write_text("sample_id\n1\n")


@pytest.fixture
def fake_runner(monkeypatch):
    monkeypatch.setitem(suites.TASK_RUNNERS, "zeroshot", _fake_zeroshot)


def test_a_suite_writes_results_cards_its_config_and_the_leaderboard(tmp_path, fake_runner):
    out = bench.run_suite(SUITE, tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    for name in ("results.csv", "samples.csv", "model_cards.json", "bench_config.json", "LEADERBOARD.md",
                 "leaderboard.csv", "leaderboard.html", "plots/zeroshot_score_vs_eps.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "bench_config.json").read_text())["models"] == ["tiny-clip"]
    assert [c["model"] for c in json.loads((out / "model_cards.json").read_text())] == ["tiny-clip"]
    assert not list(out.glob(".bench-*"))


def test_a_suite_replaces_earlier_result_files_instead_of_merging(tmp_path, fake_runner):
    write_results(tmp_path / "results", model_rows("old-model", 0.5, 0.4, 0.3))
    bench.run_suite(SUITE, tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    assert set(pd.read_csv(tmp_path / "results" / "results.csv")["model"]) == {"tiny-clip"}


def test_a_failing_task_leaves_the_earlier_results_untouched(tmp_path, monkeypatch):
    def broken(ctx):
        upsert_results(ctx.out, model_rows("half", 0.5, 0.4, 0.3))
        raise UserError("dataset missing")

    monkeypatch.setitem(suites.TASK_RUNNERS, "zeroshot", broken)
    before = write_results(tmp_path / "results", model_rows("old-model", 0.5, 0.4, 0.3))
    text = (before / "results.csv").read_text()
    with pytest.raises(UserError):
        bench.run_suite(SUITE, before, runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    assert (before / "results.csv").read_text() == text
    assert not list(before.glob(".bench-*"))


def test_the_default_suite_is_zero_shot_and_the_full_suite_runs_every_task_at_clean_2_and_4_over_255():
    default, full = suites.get_suite("default"), suites.get_suite("full")
    assert default.tasks == ("zeroshot",)
    assert full.tasks == tuple(suites.TASK_RUNNERS) == ("zeroshot", "captioning", "vqa")
    for suite in (default, full):
        assert suite.eps == ("2/255", "4/255")
        assert suite.base_model == "tiny-clip" and suite.objectives == ("simclip-anchored",)


def test_the_full_suite_writes_rows_and_samples_of_every_task_and_renders_them(tmp_path):
    suite = replace(suites.get_suite("full"), objectives=(), eps=("4/255",), n_samples=4, iterations=2)
    write_results(tmp_path / "results", model_rows("old-model", 0.5, 0.4, 0.3))
    out = bench.run_suite(suite, tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["task"]) == {"zeroshot", "captioning", "vqa"}
    assert set(rows.loc[rows["task"] == "zeroshot", "model"]) == {"tiny-clip"}
    assert set(rows.loc[rows["task"] != "zeroshot", "model"]) == {"tiny-vlm[tiny-clip]"}
    assert set(rows.loc[rows["task"] == "captioning", "metric"]) == {"cider"}
    assert set(rows.loc[rows["task"] == "vqa", "metric"]) == {"vqa_accuracy"}
    assert len(pd.read_csv(out / "vlm_samples.csv")) == 2 * 4  # captioning + VQA, 4 samples each
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 1 and not board.filter(regex="clean|4/255").isna().any(axis=None), board
    assert [c["model"] for c in json.loads((out / "model_cards.json").read_text())] == ["tiny-clip"]
    assert "**captioning** with the VLM tiny-vlm" in (out / "LEADERBOARD.md").read_text()


def test_a_zero_shot_suite_leaves_no_stale_vlm_samples(tmp_path, fake_runner):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "vlm_samples.csv").write_text("sample_id\nold\n")
    bench.run_suite(SUITE, tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    assert not (tmp_path / "results" / "vlm_samples.csv").exists()


def test_an_unknown_suite_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'default'"):
        suites.get_suite("defautl")


def test_a_suite_naming_a_task_without_a_runner_fails_before_any_work():
    with pytest.raises(UserError, match="without a runner: retrieval"):
        suites.validate_suite(replace(SUITE, tasks=("zeroshot", "retrieval")))


def test_a_finished_run_with_the_same_settings_is_reused_and_one_with_others_is_refused(tmp_path):
    suite = replace(SUITE, objectives=("simclip-anchored",), train_steps=3, train_batch_size=8, train_size=64,
                    train_warmup_steps=1)
    name = bench.run_name("tiny-clip", "simclip-anchored", "4/255", 3)
    assert name == "tiny-clip-simclip-anchored-eps4-3steps"
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "encoder.safetensors").write_bytes(b"")
    config = {"model": "tiny-clip", "objective": "simclip-anchored", "eps": "4/255", "steps": 3, "batch_size": 8,
              "lr": 0.001, "seed": 0, "train_size": 64}
    (run / "config.json").write_text(json.dumps(config))
    assert bench.ensure_trained(suite, tmp_path / "runs", "cpu", log=lambda _: None) == [str(run)]
    (run / "config.json").write_text(json.dumps({**config, "steps": 4}))
    with pytest.raises(UserError, match="other settings"):
        bench.ensure_trained(suite, tmp_path / "runs", "cpu", log=lambda _: None)
