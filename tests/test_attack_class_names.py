"""``simclip attack --image`` against the user's own labels: ``--class-names``, ``--template``, ``--label``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from simclip_bench.attacks.eps import parse_eps
from simclip_bench.cli import app
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.errors import UserError
from simclip_bench.jobs.attack_gallery import AttackRequest, load_image_file, run_attack_gallery
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier


@pytest.fixture(scope="module")
def star(tmp_path_factory) -> Path:
    """A generated test image of a star, as a PNG file."""
    data = ShapesDataset("test", size=200)
    index = next(i for i in range(len(data)) if data.classnames[data.sample(i).label] == "star")
    path = tmp_path_factory.mktemp("images") / "star.png"
    Image.fromarray(data.sample(index).image).save(path)
    return path


def _request(tmp_path, **fields) -> AttackRequest:
    return AttackRequest(eps=parse_eps("4/255"), n_iter=2, out=tmp_path / "out", device="cpu", **fields)


def _clean_probs(tiny, path, names, templates) -> torch.Tensor:
    head = ZeroShotClassifier(tiny.model.encoder, build_text_classifier(tiny.model, names, templates)).eval()
    with torch.no_grad():
        return head(load_image_file(path, tiny.model.image_size)[None]).softmax(-1)[0]


def test_a_given_image_is_classified_among_the_given_names_with_the_given_template(tmp_path, tiny, star):
    names = ("circle", "star", "teapot")
    (item,) = run_attack_gallery(_request(tmp_path, images=[star], class_names="circle, star,teapot",
                                          templates=["a drawing of a {}."], labels=["star"]))
    probs = _clean_probs(tiny, star, names, ["a drawing of a {}."])
    assert item.clean_label == names[int(probs.argmax())]
    assert item.clean_prob == pytest.approx(float(probs.max()), abs=1e-5)
    assert item.true_label == "star" and item.clean_correct == (item.clean_label == "star")
    assert item.adv_label in names


def test_class_names_from_a_file_default_to_clip_s_template(tmp_path, tiny, star):
    (tmp_path / "names.txt").write_text("teapot\n\nstar\ncircle\n")
    (item,) = run_attack_gallery(_request(tmp_path, images=[star], class_names=str(tmp_path / "names.txt")))
    probs = _clean_probs(tiny, star, ("teapot", "star", "circle"), ["a photo of a {}."])
    assert item.clean_prob == pytest.approx(float(probs.max()), abs=1e-5)
    assert item.true_label is None and item.clean_correct is None  # no --label: nothing to compare with


def test_built_in_images_say_whether_the_clean_prediction_is_right(tmp_path):
    items = run_attack_gallery(_request(tmp_path, n_images=3))
    assert all(i.true_label and i.clean_correct == (i.clean_label == i.true_label) for i in items)


@pytest.mark.parametrize("fields, message", [
    ({"class_names": ","}, "names no classes"),
    ({"class_names": " "}, "names no classes"),
    ({"class_names": "no/such.txt"}, "no/such.txt: no such file"),
    ({"class_names": "cat"}, "needs at least 2"),
    ({"class_names": "cat,dog,cat"}, "names 'cat' twice"),
    ({"class_names": "cat,dog", "templates": ["a photo"]}, "has no {}"),
    ({"class_names": "cat,dog", "templates": [""]}, "has no {}"),
    ({"class_names": "cat,dog", "labels": ["cow"]}, "'cow' is not one of the class names"),
    ({"class_names": "cat,dog", "labels": ["cat", "dog"]}, "2 --label for 1 --image"),
])
def test_bad_class_names_templates_and_labels_get_one_line_before_anything_runs(tmp_path, star, fields, message):
    with pytest.raises(UserError, match=message) as error:
        run_attack_gallery(_request(tmp_path, images=[star], **fields))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_empty_names_file_is_refused(tmp_path, star):
    (tmp_path / "names.txt").write_text("\n \n")
    with pytest.raises(UserError, match="names.txt has no class names"):
        run_attack_gallery(_request(tmp_path, images=[star], class_names=str(tmp_path / "names.txt")))


def test_class_names_and_labels_need_given_images(tmp_path):
    with pytest.raises(UserError, match="add --image"):
        run_attack_gallery(_request(tmp_path, class_names="cat,dog"))
    with pytest.raises(UserError, match="add --image"):
        run_attack_gallery(_request(tmp_path, labels=["star"]))


def test_cli_attacks_a_photo_against_its_own_labels(tmp_path, star, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["attack", "--image", str(star), "--class-names", "star,circle",
                                      "--template", "a {} shape.", "--label", "star", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("star"))
    assert "[true: star" in line and ("clean right" in line or "clean wrong" in line)
    assert (tmp_path / "attacks-out" / "star_panel.png").is_file()
