"""Datasets for the zero-shot benchmark, built offline in each supported layout."""
from pathlib import Path

import numpy as np
import pytest
from _shapes_folder import write_shapes_folder
from PIL import Image

from simclip_bench.data.catalog import ROBUSTVLM_DATASETS, dataset_root, expand, open_source
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.shapes import SHAPES
from simclip_bench.errors import UserError


def test_collections_expand_to_their_members_once():
    assert expand(["robustvlm"]) == list(ROBUSTVLM_DATASETS)
    assert len(ROBUSTVLM_DATASETS) == 13
    assert expand(["cifar10", "robustvlm", "imagenet"])[-1] == "imagenet1k"
    assert expand(["cifar10", "robustvlm"]).count("cifar10") == 1


def test_dataset_root_fills_the_clip_benchmark_placeholder():
    assert dataset_root("/data/{dataset}", "cifar10") == Path("/data/cifar10")
    assert dataset_root("/data/all", "cifar10") == Path("/data/all")


def test_image_folder_class_names_default_to_folder_names(tmp_path, tiny):
    source = open_source(str(write_shapes_folder(tmp_path / "shapes-folder")))
    assert source.classnames == sorted(SHAPES)
    assert source.templates == ["a photo of a {c}."]
    assert len(source) == 3 * len(SHAPES)
    assert source.sample_id(0) == "circle/0.png"
    x, y = source.load([0, 5], tiny.model.image_size, pixel_transform(tiny.model.clip.visual.preprocess_cfg))
    assert x.shape == (2, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [0, 1]


def test_image_folder_reads_classnames_and_templates_files(tmp_path):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    names = [f"shape {i}" for i in range(len(SHAPES))]
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    (root / "templates.txt").write_text("a drawing of a {c}.\nthis is a {}\n")
    source = open_source(str(root))
    assert source.classnames == names
    assert source.templates == ["a drawing of a {c}.", "this is a {}"]


def test_image_folder_with_wrong_number_of_classnames_is_refused(tmp_path):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    (root / "classnames.txt").write_text("one\ntwo\n")
    with pytest.raises(UserError, match="2 names for 8 class folders"):
        open_source(str(root))


def test_template_without_placeholder_is_refused(tmp_path):
    root = write_shapes_folder(tmp_path / "f", per_class=1)
    (root / "templates.txt").write_text("a photo\n")
    with pytest.raises(UserError, match="placeholder"):
        open_source(str(root))


def test_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match="no class sub-folders"):
        open_source(str(tmp_path / "flat"))


def test_a_folder_with_one_class_is_refused_before_any_model_runs(tmp_path):
    # One class: the zero-shot head can only predict it, so clean and robust accuracy would read 100 %.
    (tmp_path / "one" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "dog" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "dog" / "b.png")
    with pytest.raises(UserError, match=r"has 1 class \('dog'\); zero-shot accuracy needs at least 2") as e:
        open_source(str(tmp_path / "one"))
    assert f"own sub-folder of {tmp_path / 'one'}" in str(e.value)
    (tmp_path / "one" / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    assert open_source(str(tmp_path / "one")).classnames == ["cat", "dog"]


def test_missing_clip_benchmark_dataset_says_where_and_how(tmp_path):
    with pytest.raises(UserError) as e:
        open_source("cifar10", str(tmp_path / "{dataset}"))
    message = str(e.value)
    assert str(tmp_path / "cifar10") in message and "does not exist" in message
    assert "build_dataset('cifar10'" in message and "--dataset-root" in message


def test_incomplete_clip_benchmark_dataset_is_reported(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "junk.txt").write_text("not cifar")
    with pytest.raises(UserError, match="incomplete or in the wrong layout"):
        open_source("cifar10", str(tmp_path / "{dataset}"))


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'cifar100'"):
        open_source("cifar1000")


@pytest.fixture(scope="module")
def sketch_root(tmp_path_factory):
    """ImageNet-Sketch's layout (one folder per ImageNet wnid), one tiny image per class."""
    from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids

    root = tmp_path_factory.mktemp("datasets") / "imagenet_sketch"
    rng = np.random.default_rng(0)
    for wnid in all_imagenet_wordnet_ids:
        (root / wnid).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / wnid / "0.png")
    return root


def test_clip_benchmark_dataset_from_local_files(sketch_root, tiny):
    source = open_source("imagenet_sketch", str(sketch_root.parent / "{dataset}"))
    assert len(source) == 1000 and len(source.classnames) == 1000
    assert source.classnames[0] == "tench"  # CLIP_benchmark's ImageNet class names
    assert len(source.templates) == 80 and "{c}" in source.templates[0]  # its ImageNet templates
    assert source.sample_id(0) == "n01440764/0.png"
    x, y = source.load([0, 999], tiny.model.image_size, pixel_transform(tiny.model.clip.visual.preprocess_cfg))
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 999]
