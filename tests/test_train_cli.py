"""``simclip train`` options: every bad input ends as one line and exit code 2, nothing written."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app


@pytest.mark.parametrize("args, message", [
    (["--objective", "tecoaa"], "did you mean 'tecoa'"),
    (["--objective", "fare", "--anchor-weight", "0.5"], "--anchor-weight applies to --objective simclip only"),
    (["--objective", "fare", "--predictor"], "--predictor applies to --objective simclip only"),
    (["--batch-size", "10", "--accum-steps", "4"], "must be divisible by --accum-steps 4"),
    (["--accum-steps", "0"], "--accum-steps must be a positive integer"),
    (["--precision", "fp8"], "--precision must be one of"),
    (["--collapse-stop", "0.7", "--collapse-warn", "0.5"], "--collapse-stop"),
    (["--save-every", "0"], "--save-every must be a positive integer"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--stop-after", "0", "--steps", "1"], "--stop-after must be a positive integer"),
    (["--attack-momentum", "1"], "--attack-momentum must be a number in [0, 1), got 1.0"),
    (["--attack-momentum", "nan"], "--attack-momentum must be a number in [0, 1)"),
    (["--attack-loss", "ce"], "--attack-loss ce does not go with --objective simclip-anchored"),
    (["--objective", "tecoa", "--attack-loss", "l2"], "it attacks with ce"),
    (["--attack-loss", "cosin"], "did you mean 'cosine'"),
    (["--attack-start", "ball-clip"], "did you mean 'ball-clipped'"),
])
def test_bad_training_options_fail_with_one_line(args, message, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--device", "cpu", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("simclip: error:") and message in result.output
    assert "Traceback" not in result.output
    assert not (out / "encoder.safetensors").exists()


def test_resume_takes_no_other_settings(tmp_path):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--lr", "0.1"])
    assert result.exit_code == 2 and "drop --lr" in result.output


def test_resume_of_a_directory_that_is_not_a_run_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "config.json" in result.output
