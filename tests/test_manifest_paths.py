"""Manifests never point outside their folder: training lists, Karpathy caption files, VQA question files."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.data.files import list_file
from simclip_bench.data.manifest_paths import ManifestFolder
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.vlm_files import caption_dataset, vqa_dataset
from simclip_bench.errors import UserError

TINY_PREPROCESS = {"size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
                   "resize_mode": "shortest"}


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path)
    return path


@pytest.fixture()
def layout(tmp_path):
    """``data/`` (where the manifests go) with two images, and ``outside/secret.png`` beside it."""
    data = tmp_path / "data"
    _image(data / "images" / "a.png")
    _image(data / "images" / "b.png")
    _image(tmp_path / "outside" / "secret.png")
    return data


def _list(data, name, paths):
    if name.endswith(".csv"):
        (data / name).write_text("path\n" + "".join(f"{p}\n" for p in paths))
    else:
        (data / name).write_text("".join(json.dumps({"path": p}) + "\n" for p in paths))
    return data / name


# ------------------------------------------------------------------------------------------ training lists


@pytest.mark.parametrize("name", ["list.csv", "list.jsonl"])
def test_a_training_list_entry_escaping_with_dotdot_is_refused_naming_file_line_and_entry(layout, name):
    manifest = _list(layout, name, ["images/a.png", "../outside/secret.png"])
    line = 3 if name.endswith(".csv") else 2  # a CSV's header is line 1
    with pytest.raises(UserError) as error:
        list_file(manifest, pixel_transform(TINY_PREPROCESS))
    message = str(error.value)
    assert f"{manifest} line {line}: entry '../outside/secret.png' points outside" in message
    assert "\n" not in message


def test_a_training_list_entry_escaping_through_a_symlink_is_refused(layout):
    (layout / "images" / "link").symlink_to(layout.parent / "outside", target_is_directory=True)
    manifest = _list(layout, "list.csv", ["images/link/secret.png"])
    with pytest.raises(UserError, match="line 2: entry 'images/link/secret.png' points outside"):
        list_file(manifest, pixel_transform(TINY_PREPROCESS))


def test_a_training_list_may_name_images_by_absolute_path_anywhere(layout):
    secret = layout.parent / "outside" / "secret.png"
    ds = list_file(_list(layout, "list.csv", ["images/a.png", str(secret)]), pixel_transform(TINY_PREPROCESS))
    assert ds.paths == [str(layout / "images" / "a.png"), str(secret)]


def test_dotdot_that_stays_inside_the_list_folder_is_fine(layout):
    ds = list_file(_list(layout, "list.jsonl", ["images/../images/b.png"]), pixel_transform(TINY_PREPROCESS))
    assert ds[0].image is not None


def test_train_cli_refuses_an_escaping_list_with_one_line(layout, tmp_path):
    manifest = _list(layout, "list.csv", ["../outside/secret.png"])
    result = CliRunner().invoke(app, ["train", "--data", str(manifest), "--steps", "1", "--device", "cpu",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("simclip: error:")]
    assert len(error) == 1 and "line 2" in error[0] and "points outside" in error[0]


# ------------------------------------------------------------------------------------- caption / VQA files


def _karpathy(root, filename, filepath="val2014"):
    entries = [{"filepath": "val2014", "filename": "ok.jpg", "split": "test", "cocoid": 1,
                "sentences": [{"raw": "a field"}]},
               {"filepath": filepath, "filename": filename, "split": "test", "cocoid": 2,
                "sentences": [{"raw": "a secret"}]}]
    (root / "karpathy_coco.json").write_text(json.dumps({"images": entries}))
    return root / "karpathy_coco.json"


@pytest.fixture()
def coco(tmp_path):
    root = tmp_path / "coco"
    _image(root / "val2014" / "ok.jpg")
    _image(tmp_path / "secret.jpg")
    return root


@pytest.mark.parametrize("filename", ["../../secret.jpg", "SECRET_ABSOLUTE"])
def test_a_caption_file_entry_outside_the_image_folder_is_refused(coco, filename):
    filename = str(coco.parent / "secret.jpg") if filename == "SECRET_ABSOLUTE" else filename
    manifest = _karpathy(coco, filename)
    with pytest.raises(UserError) as error:
        caption_dataset("coco", coco)
    assert f"{manifest} images[1]: entry" in str(error.value) and "points outside" in str(error.value)


def test_an_image_folder_that_is_itself_a_symlink_is_fine(tmp_path):
    _image(tmp_path / "shared" / "val2014" / "ok.jpg")
    root = tmp_path / "coco"
    root.mkdir()
    (root / "val2014").symlink_to(tmp_path / "shared" / "val2014", target_is_directory=True)
    (root / "karpathy_coco.json").write_text(json.dumps({"images": [
        {"filepath": "val2014", "filename": "ok.jpg", "split": "test", "cocoid": 1, "sentences": [{"raw": "x"}]}]}))
    assert len(caption_dataset("coco", root)) == 1


def test_a_vqa_image_id_outside_the_image_folder_is_refused(tmp_path):
    _image(tmp_path / "vqa" / "images" / "7.jpg")
    questions = tmp_path / "vqa" / "questions.json"
    questions.write_text(json.dumps({"questions": [
        {"question_id": 1, "image_id": 7, "question": "what?"},
        {"question_id": 2, "image_id": "../../secret.jpg", "question": "what?"}]}))
    (tmp_path / "vqa" / "annotations.json").write_text(json.dumps({"annotations": [
        {"question_id": q, "answers": [{"answer": "x"}]} for q in (1, 2)]}))
    with pytest.raises(UserError, match=r"questions\.json questions\[1\]: entry '\.\./\.\./secret\.jpg'"):
        vqa_dataset("vqav2", tmp_path / "vqa")


# ------------------------------------------------------------------------------------------ the rule itself


def test_a_symlinked_file_pointing_outside_is_refused(tmp_path):
    _image(tmp_path / "secret.png")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "innocent.png").symlink_to(tmp_path / "secret.png")
    folder = ManifestFolder(tmp_path / "m.csv", tmp_path / "root")
    with pytest.raises(UserError, match="'innocent.png' points outside"):
        folder.path("innocent.png", "line 2")


def test_entries_inside_are_returned_under_the_folder_as_written(tmp_path):
    folder = ManifestFolder(tmp_path / "m.csv", tmp_path)
    assert folder.path("sub/x.png", "line 2") == tmp_path / "sub" / "x.png"
    assert folder.path(str(tmp_path / "sub" / "x.png"), "line 3") == tmp_path / "sub" / "x.png"
