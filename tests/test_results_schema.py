"""The result file is tidy: one row per model x task x dataset x attack x eps x metric, every column present."""
import pandas as pd
import pytest

from simclip_bench.results.schema import RESULT_COLUMNS, SAMPLE_COLUMNS, wilson_interval
from simclip_bench.results.store import append_results

REQUIRED = {"run_id", "created_at", "git_sha", "package_version", "model", "checkpoint_hash", "task", "dataset",
            "n_samples", "attack", "norm", "eps", "eps_text", "metric", "value", "seconds", "device"}


def test_schema_has_the_required_columns():
    assert REQUIRED <= set(RESULT_COLUMNS)
    assert {"sample_id", "clean_correct", "adv_correct", "max_perturbation"} <= set(SAMPLE_COLUMNS)


def test_wilson_interval_brackets_the_proportion():
    lo, hi = wilson_interval(80, 100)
    assert lo < 0.8 < hi and hi - lo < 0.2
    assert wilson_interval(0, 50)[0] == 0.0


def test_appends_keep_old_rows(tmp_path):
    row = {c: 1 for c in RESULT_COLUMNS}
    append_results(tmp_path, [row], [])
    append_results(tmp_path, [row, row], [])
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3


def test_foreign_csv_is_not_silently_mixed(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="different schema"):
        append_results(tmp_path, [{c: 1 for c in RESULT_COLUMNS}], [])
