"""Captioning and VQA datasets: the built-in generated sets and the local-file adapters (and their errors)."""
import json

import pytest
from PIL import Image

from simclip_bench.data.vlm_files import caption_dataset, vqa_dataset
from simclip_bench.data.vlm_samples import shapes_captioning, shapes_vqa
from simclip_bench.errors import UserError


def test_built_in_captioning_has_five_captions_per_test_image():
    ds = shapes_captioning(12)
    assert len(ds) == 12 and all(len(s.references) == 5 for s in ds.samples)
    assert ds.images(32).shape == (12, 3, 32, 32)


def test_built_in_vqa_cycles_through_the_six_questions_with_ten_identical_answers():
    ds = shapes_vqa(12)
    assert [s.sample_id.rsplit("q", 1)[1] for s in ds.samples[:6]] == ["0", "1", "2", "3", "4", "5"]
    assert all(len(s.references) == 10 and len(set(s.references)) == 1 for s in ds.samples)


def _write_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path)


def test_coco_karpathy_test_split_from_local_files(tmp_path):
    (tmp_path / "val2014").mkdir()
    _write_image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    entries = [{"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "split": "test", "cocoid": 42,
                "sentences": [{"raw": "A green field."}, {"raw": "Grass. "}]},
               {"filepath": "val2014", "filename": "other.jpg", "split": "train", "cocoid": 1, "sentences": []}]
    (tmp_path / "karpathy_coco.json").write_text(json.dumps({"images": entries}))
    ds = caption_dataset("coco", tmp_path)
    assert [s.sample_id for s in ds.samples] == ["coco/42"]
    assert ds.samples[0].references == ("A green field.", "Grass.")
    assert ds.images(16).shape == (1, 3, 16, 16) and ds.stop_below == pytest.approx(0.10)


def test_vqav2_questions_and_annotations_from_local_files(tmp_path):
    _write_image(tmp_path / "val2014" / "COCO_val2014_000000000007.jpg")
    (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {"questions": [{"question_id": 70, "image_id": 7, "question": "What color is it?"}]}))
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(
        {"annotations": [{"question_id": 70, "image_id": 7, "answers": [{"answer": "green"}] * 10}]}))
    ds = vqa_dataset("vqav2", tmp_path)
    assert ds.samples[0].question == "What color is it?" and ds.samples[0].references == ("green",) * 10
    assert ds.images(8).shape == (1, 3, 8, 8)


def test_missing_files_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        caption_dataset("coco", tmp_path / "nope")
    with pytest.raises(UserError, match="karpathy_coco.json"):
        caption_dataset("coco", tmp_path)
    with pytest.raises(UserError, match="questions file"):
        vqa_dataset("textvqa", tmp_path)


def test_a_missing_image_is_reported_when_loaded(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "questions.json").write_text(json.dumps({"questions": [{"question_id": 1, "image_id": 5,
                                                                         "question": "q?"}]}))
    (tmp_path / "annotations.json").write_text(json.dumps({"annotations": [{"question_id": 1,
                                                                            "answers": [{"answer": "a"}]}]}))
    ds = vqa_dataset("vizwiz", tmp_path)
    with pytest.raises(UserError, match="missing"):
        ds.images(8)


def test_subsets_are_fixed_by_seed_and_size(tmp_path):
    ds = shapes_captioning(50)
    assert [s.sample_id for s in ds.subset(10).samples] == [s.sample_id for s in ds.samples[:10]]
    with pytest.raises(UserError, match="exceeds"):
        ds.subset(51)
