"""``simclip eval --task captioning|vqa`` and ``simclip attack --vlm`` through Typer's runner."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.jobs.vlm_eval import VLM_SAMPLE_COLUMNS
from simclip_bench.results.schema import RESULT_COLUMNS

runner = CliRunner()


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A copy of the tiny-clip tower saved as an encoder checkpoint: a model spec that is a path."""
    from simclip_bench.models.checkpoint import save_encoder
    from simclip_bench.models.spec import load_model

    path = tmp_path_factory.mktemp("enc") / "encoder.safetensors"
    save_encoder(load_model("tiny-clip").model.clip.visual, path, base_model="tiny-clip", arch="simclip-tiny")
    return path


def test_eval_captioning_writes_tidy_rows_and_the_texts_per_sample(tmp_path, encoder_file):
    args = ["eval", "--task", "captioning", "--model", "tiny-clip", "--model", str(encoder_file), "--n-samples", "4",
            "--iterations", "2", "--eps", "4/255", "--out", str(tmp_path), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows.columns) == list(RESULT_COLUMNS)
    assert rows["task"].tolist() == ["captioning"] * 4 and set(rows["metric"]) == {"cider"}
    assert rows["attack"].tolist() == ["none", "apgd-ensemble"] * 2
    assert rows["model"].tolist() == ["tiny-vlm[tiny-clip]"] * 2 + [f"tiny-vlm[{encoder_file}]"] * 2
    clean, adv = rows["value"].tolist()[:2]
    assert adv <= clean
    assert rows["value"].tolist()[2:] == pytest.approx([clean, adv])  # the same tower under another name
    samples = pd.read_csv(tmp_path / "vlm_samples.csv", keep_default_na=False)
    assert list(samples.columns) == list(VLM_SAMPLE_COLUMNS) and len(samples) == 8
    assert (samples["clean_text"].str.len() > 0).all() and (samples["adv_text"].str.len() > 0).all()
    assert (samples["adv_score"] <= samples["clean_score"] + 1e-9).all()
    assert (samples["max_perturbation"] <= 4 / 255 + 1e-6).all()
    assert len(json.loads(samples["references"][0])) == 5
    assert rows["value"].iloc[1] == pytest.approx(samples["adv_score"].mean())
    attacked = samples[samples["attack"] == "apgd-ensemble"]
    # each sample's cost: 1 + 2 evaluations per APGD run it entered (up to 5 captions and the fp32 final run)
    assert attacked["grad_evals"].between(3, 6 * 3).all()
    assert (samples[samples["attack"] == "none"]["grad_evals"] == 0).all()
    assert rows["grad_evals"].tolist()[:2] == pytest.approx([0.0, attacked["grad_evals"].iloc[:4].mean()])


def test_eval_vqa_clean_only(tmp_path):
    result = runner.invoke(app, ["eval", "--task", "vqa", "--model", "tiny-clip", "--n-samples", "6", "--attack",
                                 "none", "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "results.csv")
    assert rows["metric"].tolist() == ["vqa_accuracy"] and 0 <= rows["value"][0] <= 1


def test_eval_vqa_metric_variant_scores_the_rows_and_is_recorded_in_each(tmp_path, monkeypatch):
    """Human answers written "the <answer>": the official metric compares them as written (every answer
    scores 0), RobustVLM's drops the article as it does from the prediction (right answers score 1)."""
    import dataclasses

    import simclip_bench.jobs.vlm_tasks as vlm_tasks
    from simclip_bench.data.vlm_samples import shapes_vqa

    def with_articles(n, seed=0):
        ds = shapes_vqa(n, seed)
        written = [dataclasses.replace(s, references=tuple(f"the {r}" for r in s.references)) for s in ds.samples]
        return dataclasses.replace(ds, samples=written)

    monkeypatch.setattr(vlm_tasks, "shapes_vqa", with_articles)
    base = ["eval", "--task", "vqa", "--model", "tiny-clip", "--n-samples", "6", "--out", str(tmp_path),
            "--device", "cpu"]
    for extra in (["--vqa-metric", "official", "--attack", "none"],
                  ["--vqa-metric", "robustvlm", "--attack", "apgd", "--iterations", "2", "--eps", "4/255"]):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    assert rows["attack"].tolist() == ["none", "none", "apgd-single"]
    assert [json.loads(c)["vqa_metric"] for c in rows["attack_config"]] == ["official", "robustvlm", "robustvlm"]
    assert rows["setting"].nunique() == 3 and (rows["setting"] != "").all()  # the two clean rows stay apart
    official, robustvlm = rows["value"].tolist()[:2]
    assert official == 0.0 and robustvlm >= 0.5
    samples = pd.read_csv(tmp_path / "vlm_samples.csv", keep_default_na=False)
    assert set(samples["setting"]) == set(rows["setting"][[0, 2]])


def test_eval_reads_a_coco_folder_from_the_dataset_root(tmp_path):
    from PIL import Image

    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    entries = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30)]):
        Image.new("RGB", (48, 40), colour).save(root / "val2014" / f"img{i}.jpg")
        entries.append({"filepath": "val2014", "filename": f"img{i}.jpg", "split": "test", "cocoid": i,
                        "sentences": [{"raw": "a plain square."}, {"raw": "a coloured square."}]})
    (root / "karpathy_coco.json").write_text(json.dumps({"images": entries}))
    result = runner.invoke(app, ["eval", "--task", "captioning", "--dataset", "coco", "--dataset-root",
                                 str(tmp_path / "{dataset}"), "--model", "tiny-clip", "--attack", "none",
                                 "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert rows["dataset"].tolist() == ["coco"] and rows["n_samples"].tolist() == [3]


def test_attack_a_vlm_saves_pictures_with_captions_before_and_after(tmp_path):
    result = runner.invoke(app, ["attack", "--vlm", "tiny-vlm", "--n-images", "2", "--iterations", "2",
                                 "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*_panel.png"))) == 2 and len(list(tmp_path.glob("*_adv.png"))) == 2
    assert "->" in result.output


def test_targeted_caption_attack_reports_whether_the_target_was_reached(tmp_path):
    result = runner.invoke(app, ["attack", "--vlm", "tiny-vlm", "--target", "a red star", "--n-images", "1",
                                 "--iterations", "3", "--eps", "2/255", "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "(target reached)" in result.output or "(target missed)" in result.output
