"""The result files: tidy aggregate rows keyed so re-runs replace, per-sample rows appended durably."""
import pandas as pd
import pytest

from simclip_bench.errors import UserError
from simclip_bench.results.schema import RESULT_COLUMNS, RESULT_KEY, SAMPLE_COLUMNS, wilson_interval
from simclip_bench.results.store import append_results, append_samples, check_store, read_samples, upsert_results

REQUIRED = {"run_id", "created_at", "git_sha", "package_version", "model", "checkpoint_hash", "task", "dataset",
            "n_samples", "attack", "norm", "eps", "eps_text", "metric", "value", "seconds", "device", "protocol"}


def _row(**values):
    return {c: values.get(c, 1) for c in RESULT_COLUMNS}


def test_schema_has_the_required_columns():
    assert REQUIRED <= set(RESULT_COLUMNS)
    assert set(RESULT_KEY) <= set(RESULT_COLUMNS)
    assert {"sample_id", "setting", "clean_correct", "adv_correct", "max_perturbation"} <= set(SAMPLE_COLUMNS)


def test_wilson_interval_brackets_the_proportion():
    lo, hi = wilson_interval(80, 100)
    assert lo < 0.8 < hi and hi - lo < 0.2
    assert wilson_interval(0, 50)[0] == 0.0


def test_rows_with_new_keys_accumulate(tmp_path):
    upsert_results(tmp_path, [_row(model="a")])
    upsert_results(tmp_path, [_row(model="b"), _row(model="c")])
    assert sorted(pd.read_csv(tmp_path / "results.csv")["model"]) == ["a", "b", "c"]


def test_a_row_with_the_same_key_replaces_the_old_one(tmp_path):
    upsert_results(tmp_path, [_row(model="a", value=0.5, run_id="first")])
    upsert_results(tmp_path, [_row(model="a", value=0.5, run_id="second")])
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["run_id"]) == ["second"]


def test_foreign_csv_is_not_silently_mixed(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a simclip-bench store file"):
        append_results(tmp_path, [_row()], [])


def test_a_store_written_before_measurement_identities_is_refused_not_appended_to(tmp_path):
    old = "run_id,model,checkpoint_hash,task,dataset,sample_id,attack,setting\nr,m,h,zeroshot,shapes,0,none,s\n"
    (tmp_path / "samples.csv").write_text(old)
    with pytest.raises(UserError, match="before measurement identities"):
        append_samples(tmp_path, [{c: "x" for c in SAMPLE_COLUMNS}])
    assert (tmp_path / "samples.csv").read_text() == old


def test_a_store_whose_header_line_was_cut_is_refused_and_left_as_it_is(tmp_path):
    (tmp_path / "samples.csv").write_text("run_id,model,check")
    with pytest.raises(UserError, match="header line was cut short"):
        check_store(tmp_path, [("samples.csv", SAMPLE_COLUMNS)])
    assert read_samples(tmp_path).empty  # reading it is no error: it holds no row


def test_sample_rows_append_and_read_back(tmp_path):
    rows = [{c: f"{c}{i}" for c in SAMPLE_COLUMNS} for i in range(3)]
    append_samples(tmp_path, rows[:2])
    append_samples(tmp_path, rows[2:])
    assert list(read_samples(tmp_path)["sample_id"]) == ["sample_id0", "sample_id1", "sample_id2"]


def test_a_line_cut_by_a_crash_is_dropped_not_misread(tmp_path):
    rows = [{c: f"{c}{i}" for c in SAMPLE_COLUMNS} for i in range(2)]
    append_samples(tmp_path, rows)
    with open(tmp_path / "samples.csv", "a") as f:
        f.write("run,model,half a line")  # what SIGKILL in the middle of a write leaves
    assert len(read_samples(tmp_path)) == 2
    append_samples(tmp_path, [{c: f"{c}9" for c in SAMPLE_COLUMNS}])
    assert list(read_samples(tmp_path)["sample_id"]) == ["sample_id0", "sample_id1", "sample_id9"]


def test_line_breaks_inside_texts_cannot_split_a_row(tmp_path):
    row = {c: "x" for c in SAMPLE_COLUMNS} | {"fooled_by": "two\nlines"}
    append_samples(tmp_path, [row])
    assert list(read_samples(tmp_path)["fooled_by"]) == ["two lines"]
