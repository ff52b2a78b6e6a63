"""Unreadable images (``--on-error skip|fail``): left out, counted and reported, or the first one stops the command."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from _shapes_folder import write_shapes_folder
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.data.catalog import open_source
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.subset import fixed_subset
from simclip_bench.errors import UserError
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_samples
from simclip_bench.train.config import config_from_run

N_SAMPLES = 10  # of the folder's 16 images: a seeded subset, so a skipped image could shift it


def _corrupt(path, kind: str) -> None:
    """Make ``path`` unreadable: cut the PNG in half, or replace it with bytes that are no image at all."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if kind == "truncated" else b"not a png at all" * 8)


@pytest.fixture()
def folders(tmp_path):
    """(good, bad, bad_id): an ImageFolder of 16 shapes, and a copy where one image of the fixed subset is corrupt."""
    good = write_shapes_folder(tmp_path / "good", per_class=2)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    source = open_source(str(good))
    bad_id = source.sample_id(fixed_subset(len(source), N_SAMPLES)[3])
    _corrupt(bad / bad_id, "garbage")
    return good, bad, bad_id


def _eval(dataset, out, **options):
    request = EvalRequest(models=["tiny-clip"], datasets=[str(dataset)], attack="none", n_samples=N_SAMPLES,
                          out=out, device="cpu", **options)
    return run_eval(request)


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_load_readable_reports_the_unreadable_file_and_keeps_the_others(tmp_path, tiny, kind):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    source = open_source(str(root))
    _corrupt(root / source.sample_id(2), kind)
    batch = source.load_readable([0, 1, 2, 3], tiny.model.image_size,
                                 pixel_transform(tiny.model.clip.visual.preprocess_cfg))
    assert batch.kept == [0, 1, 3] and batch.x.shape[0] == 3 and len(batch.y) == 3
    assert list(batch.unreadable) == [2] and source.sample_id(2) in batch.unreadable[2]


def test_load_raises_one_line_naming_the_file(tmp_path, tiny):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    source = open_source(str(root))
    _corrupt(root / source.sample_id(0), "truncated")
    with pytest.raises(UserError, match=f"{source.sample_id(0)}.*--on-error skip") as error:
        source.load([0, 1], tiny.model.image_size, pixel_transform(tiny.model.clip.visual.preprocess_cfg))
    assert "\n" not in str(error.value)


def test_skip_leaves_the_image_out_and_reports_n_and_a_flag(folders, tmp_path):
    _, bad, bad_id = folders
    result = _eval(bad, tmp_path / "out")
    (row,) = result.rows
    assert row["n_samples"] == N_SAMPLES - 1
    assert row["flags"] == "unreadable-images(1)"
    assert len(result.unreadable) == 1 and bad_id in result.unreadable[0]
    assert result.flags == []  # not a masking-check flag


def test_a_skipped_image_does_not_shift_the_fixed_subset(folders, tmp_path):
    good, bad, bad_id = folders
    _eval(good, tmp_path / "good")
    _eval(bad, tmp_path / "bad")
    columns = ["sample_id", "label", "clean_pred"]
    expected = read_samples(tmp_path / "good")[columns]
    expected = expected[expected["sample_id"] != bad_id]
    got = read_samples(tmp_path / "bad")[columns]
    assert sorted(got.itertuples(index=False)) == sorted(expected.itertuples(index=False))


def test_fixing_the_file_and_rerunning_measures_the_fixed_data_and_replaces_the_row(folders, tmp_path):
    """A file changed, so the folder's contents (its data_id) changed: every sample is measured again on the
    data as it is now, and the new row replaces the one with the image left out."""
    good, bad, bad_id = folders
    out = tmp_path / "out"
    _eval(bad, out)
    shutil.copy(good / bad_id, bad / bad_id)
    again = _eval(bad, out)
    assert again.computed == N_SAMPLES and again.reused == 0 and again.unreadable == []
    assert again.rows[0]["n_samples"] == N_SAMPLES and again.rows[0]["flags"] == ""
    rows = pd.read_csv(out / "results.csv")
    assert list(rows["n_samples"]) == [N_SAMPLES] and rows["data_id"].nunique() == 1


def test_fail_stops_at_the_first_unreadable_image_and_names_it(folders, tmp_path):
    _, bad, bad_id = folders
    with pytest.raises(UserError, match=f"{bad_id}.*pass --on-error skip"):
        _eval(bad, tmp_path / "out", on_error="fail")


def test_an_all_unreadable_dataset_is_an_error(tmp_path):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    for png in root.rglob("*.png"):
        _corrupt(png, "garbage")
    with pytest.raises(UserError, match="none of the 8 images"):
        run_eval(EvalRequest(models=["tiny-clip"], datasets=[str(root)], attack="none", out=tmp_path / "out",
                             device="cpu"))


def test_eval_cli_lists_the_skipped_image_and_exits_0(folders, tmp_path):
    _, bad, bad_id = folders
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-clip", "--dataset", str(bad), "--attack", "none",
                                      "--n-samples", str(N_SAMPLES), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 unreadable image(s) left out" in result.output and bad_id in result.output
    saved = json.loads(next((tmp_path / "out" / "eval_configs").glob("*.json")).read_text())
    assert saved["on_error"] == "skip"


def test_eval_cli_on_error_fail_is_one_line_and_exit_2(folders, tmp_path):
    _, bad, bad_id = folders
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-clip", "--dataset", str(bad), "--attack", "none",
                                      "--n-samples", str(N_SAMPLES), "--on-error", "fail", "--out",
                                      str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("simclip: error:")]
    assert len(error) == 1 and bad_id in error[0] and "--on-error skip" in error[0]


@pytest.mark.parametrize("command", [["eval", "--attack", "none"], ["train", "--steps", "1"]])
def test_an_unknown_on_error_value_suggests_the_closest(command, tmp_path):
    result = CliRunner().invoke(app, [*command, "--on-error", "skp", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "simclip: error: --on-error 'skp' is not a choice (did you mean 'skip'?)" in " ".join(result.output.split())


def test_on_error_is_refused_for_vlm_tasks(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--task", "captioning", "--on-error", "skip", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--on-error applies to --task zeroshot" in result.output


@pytest.fixture()
def bad_training_folder(tmp_path):
    root = write_shapes_folder(tmp_path / "train", per_class=1)
    _corrupt(root / "star" / "0.png", "truncated")
    return root


def _train(folder, tmp_path, *flags):
    return CliRunner().invoke(app, ["train", "--data", str(folder), "--steps", "1", "--batch-size", "8",
                                    "--probe-size", "0", "--attack-steps", "1", "--workers", "0", "--device", "cpu",
                                    "--out", str(tmp_path / "run"), *flags])


@pytest.mark.parametrize("flags", [["--on-error", "fail"], ["--strict"]])
def test_train_on_error_fail_and_its_alias_strict_stop_at_the_unreadable_image(bad_training_folder, tmp_path, flags):
    result = _train(bad_training_folder, tmp_path, *flags)
    assert result.exit_code == 2, result.output
    assert "unreadable training image" in result.output and "star/0.png" in result.output


def test_train_skips_and_counts_the_unreadable_image_by_default(bad_training_folder, tmp_path):
    result = _train(bad_training_folder, tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["unreadable_images"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["on_error"] == "skip"


def test_strict_contradicting_on_error_skip_is_refused(bad_training_folder, tmp_path):
    result = _train(bad_training_folder, tmp_path, "--strict", "--on-error", "skip")
    assert result.exit_code == 2 and "--strict means --on-error fail" in result.output


def test_a_run_saved_with_strict_resumes_with_on_error_fail(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "tiny-clip", "strict": True}))
    assert config_from_run(tmp_path).on_error == "fail"
