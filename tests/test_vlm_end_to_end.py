"""The captioning/VQA claim on the embedded default: `simclip train`, then `simclip eval --task captioning`
and `--task vqa` with no model or dataset (tiny VLM on the generated data, base encoder vs. the run), 200
samples, RobustVLM's APGD ensemble at 4/255. Swapping in the Sim-CLIP encoder, with no VLM retraining,
keeps the clean score within 15 % and raises the score under attack."""
import pandas as pd
import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(default_training_dir):
    """A directory where `simclip train` ran with its defaults (runs/<time>-simclip-anchored)."""
    return default_training_dir


@pytest.mark.slow
@pytest.mark.parametrize("task", ["captioning", "vqa"])
def test_sim_clip_encoder_makes_the_tiny_vlm_robust(task, trained, monkeypatch):
    monkeypatch.chdir(trained)
    out = f"results-{task}"
    evaluated = runner.invoke(app, ["eval", "--task", task, "--n-samples", "200", "--eps", "4/255", "--out", out,
                                    "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    table = pd.read_csv(trained / out / "results.csv")
    score = {(r.model == "tiny-vlm[tiny-clip]", r.attack): r.value for r in table.itertuples()}
    base_clean, base_adv = score[(True, "none")], score[(True, "apgd-ensemble")]
    tuned_clean, tuned_adv = score[(False, "none")], score[(False, "apgd-ensemble")]
    report = f"{task}: base {base_clean:.3f}/{base_adv:.3f}, sim-clip {tuned_clean:.3f}/{tuned_adv:.3f}"
    print(report)
    assert tuned_adv > base_adv, report
    assert tuned_clean >= 0.85 * base_clean, report
