"""``--config run.toml|.yaml``: option values from a file, flags override them, the resolved config is saved."""
from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from simclip_bench.cli import app

runner = CliRunner()

TINY_TRAIN = """
steps = 2
batch-size = 4
train_size = 16
warmup_steps = 1
probe_size = 0
lr = 0.01
device = "cpu"
"""


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_train_takes_options_from_toml_and_flags_win_and_config_json_records_both(tmp_path):
    (tmp_path / "run.toml").write_text(TINY_TRAIN)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "run.toml"), "--lr", "0.002", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["batch_size"], saved["train_size"]) == (2, 4, 16)
    assert saved["lr"] == 0.002
    assert saved["extra"]["config_file"] == str(tmp_path / "run.toml")


def test_eval_takes_options_from_a_yaml_section_and_saves_the_resolved_settings(tmp_path):
    (tmp_path / "bench.yaml").write_text(
        "train:\n  steps: 3\neval:\n  model: tiny-clip\n  n_samples: 4\n  iterations: 2\n  eps: [2/255, 4/255]\n"
        "  device: cpu\n")
    out = tmp_path / "results"
    result = runner.invoke(app, ["eval", "--config", str(tmp_path / "bench.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "results.csv", dtype={"eps_text": str})
    assert set(table["model"]) == {"tiny-clip"} and set(table["eps_text"]) == {"0", "2/255", "4/255"}
    assert set(table["n_samples"]) == {4}
    (saved_path,) = (out / "eval_configs").glob("*.json")
    saved = json.loads(saved_path.read_text())
    assert saved["n_samples"] == 4 and saved["eps"] == ["2/255", "4/255"] and saved["models"] == ["tiny-clip"]
    assert saved["config_file"] == str(tmp_path / "bench.yaml")
    assert saved["run_id"] == table["run_id"].iloc[0]
    cards = json.loads((out / "model_cards.json").read_text())
    assert [c["model"] for c in cards] == ["tiny-clip"]


def test_an_unknown_key_is_one_line_with_the_closest_option_and_nothing_is_written(tmp_path):
    (tmp_path / "run.toml").write_text('n_sampels = 4\n')
    out = tmp_path / "results"
    line = _one_line_error(runner.invoke(app, ["eval", "--config", str(tmp_path / "run.toml"), "--out", str(out)]))
    assert "has no option 'n_sampels'" in line and "(did you mean 'n-samples'?)" in line
    assert not out.exists()


def test_a_file_that_does_not_parse_is_one_line(tmp_path):
    (tmp_path / "run.toml").write_text("steps = = 2\n")
    line = _one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "run.toml")]))
    assert line.startswith("simclip: error: --config") and "does not parse" in line


def test_a_file_of_another_format_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    line = _one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "run.json")]))
    assert "write it as .toml, .yaml or .yml" in line


def test_a_wrongly_typed_value_is_one_line(tmp_path):
    (tmp_path / "run.toml").write_text('steps = "many"\n')
    line = _one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "run.toml")]))
    assert "Invalid value for '--steps'" in line


def test_bench_reads_its_suite_from_the_file_and_suggests_a_known_one(tmp_path):
    (tmp_path / "b.toml").write_text('[bench]\nsuite = "defualt"\n')
    line = _one_line_error(runner.invoke(app, ["bench", "--config", str(tmp_path / "b.toml"),
                                               "--out", str(tmp_path / "o")]))
    assert "unknown suite 'defualt' (did you mean 'default'?)" in line
    assert not (tmp_path / "o").exists()
