"""The CLI through Typer's runner: train -> eval -> tidy table, attack pictures, one-line errors."""
import pandas as pd
import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.results.schema import RESULT_COLUMNS

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    result = runner.invoke(app, ["train", "--steps", "3", "--batch-size", "8", "--train-size", "64",
                                 "--warmup-steps", "1", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_checkpoint_config_and_metrics(run_dir):
    assert (run_dir / "encoder.safetensors").is_file()
    assert (run_dir / "config.json").is_file()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert any('"embedding_std_sqrt_d"' in line for line in lines)


def test_eval_appends_tidy_rows_for_each_model_and_eps(run_dir, tmp_path):
    args = ["eval", "--model", "tiny-clip", "--model", str(run_dir), "--n-samples", "12", "--iterations", "3",
            "--eps", "2/255", "--eps", "4/255", "--out", str(tmp_path), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert len(table) == 2 * 3  # (clean, 2/255, 4/255) x 2 models
    assert set(table["eps_text"].astype(str)) == {"0", "2/255", "4/255"}
    assert table["value"].between(0, 1).all()
    samples = pd.read_csv(tmp_path / "samples.csv")
    assert len(samples) == 2 * 3 * 12  # models x (clean, 2/255, 4/255) x samples
    assert (samples["max_perturbation"] <= samples["eps"] + 1e-6).all()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 samples computed" in again.output
    assert len(pd.read_csv(tmp_path / "results.csv")) == 6 and len(pd.read_csv(tmp_path / "samples.csv")) == 72


def test_attack_saves_adversarial_png_and_a_picture_per_image(tmp_path):
    result = runner.invoke(app, ["attack", "--n-images", "2", "--iterations", "3", "--out", str(tmp_path),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*_adv.png"))) == 2
    assert len(list(tmp_path.glob("*_panel.png"))) == 2


def test_attack_accepts_image_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (50, 40), (200, 30, 30)).save(tmp_path / "red.png")
    result = runner.invoke(app, ["attack", "--image", str(tmp_path / "red.png"), "--iterations", "2",
                                 "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "red_panel.png").is_file()


# Bad input: the table in docs/reliability.md, run row by row in tests/test_bad_input_table.py.
