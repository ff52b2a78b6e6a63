"""The many-class built-in task ``shape-colors``: 64 shape x colour classes on the shapes images."""
import numpy as np

from simclip_bench.data.catalog import check_name, open_source
from simclip_bench.data.shape_colors import CLASSNAMES, ShapeColorsDataset
from simclip_bench.data.shapes import COLORS, SHAPES, ShapesDataset, generate_sample
from simclip_bench.jobs.listing import listing
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval


def test_it_has_one_class_per_shape_and_colour_named_as_the_captions_name_them():
    assert len(CLASSNAMES) == len(SHAPES) * len(COLORS) == 64
    assert CLASSNAMES[0] == "red circle" and "black crescent" in CLASSNAMES
    assert len(set(CLASSNAMES)) == 64


def test_a_label_names_the_shape_and_the_colour_of_its_image():
    _, labels = ShapeColorsDataset("test", size=50).arrays()
    for i, label in enumerate(labels.tolist()):
        sample = generate_sample(0, "test", i)
        assert CLASSNAMES[label] == f"{sample.color} {sample.shape}"


def test_the_images_are_those_of_shapes_only_the_labels_differ():
    many, few = ShapeColorsDataset("test", size=20), ShapesDataset("test", size=20)
    assert np.array_equal(many.arrays()[0], few.arrays()[0])
    assert np.array_equal(many.arrays()[1] // len(COLORS), few.arrays()[1])
    assert many.sample_id(3) == "shape-colors/test/000003" != few.sample_id(3)


def test_every_class_occurs_in_the_test_split():
    _, labels = ShapeColorsDataset("test").arrays()
    counts = np.bincount(labels, minlength=64)
    assert counts.min() >= 5 and counts.sum() == 1000


def test_it_is_a_dataset_name_with_its_own_classes_and_templates():
    check_name("shape-colors")
    source = open_source("shape-colors")
    assert source.name == "shape-colors" and list(source.classnames) == list(CLASSNAMES)
    assert all("{}" in t for t in source.templates)
    x, y = source.load([0, 5], 32, None)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == ShapeColorsDataset("test", size=6).arrays()[1][[0, 5]].tolist()
    assert "shape-colors" in [row[0] for row in listing("datasets").rows]


def test_the_built_in_tiny_clip_classifies_it_zero_shot(tmp_path):
    result = run_eval(EvalRequest(models=["tiny-clip"], datasets=["shape-colors"], attack="none", n_samples=200,
                                  out=tmp_path, device="cpu"))
    clean = result.rows[0]["value"]
    assert clean > 0.7  # chance is 1/64
