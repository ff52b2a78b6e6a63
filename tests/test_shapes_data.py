"""The built-in generated dataset: deterministic, disjoint splits, labelled, captioned, varied."""
import numpy as np

from simclip_bench.data.shapes import BACKGROUNDS, SHAPES, ShapesDataset, generate_sample


def test_same_seed_same_images():
    a, b = generate_sample(0, "test", 5), generate_sample(0, "test", 5)
    assert np.array_equal(a.image, b.image) and a.captions == b.captions and a.qa == b.qa


def test_different_seed_or_split_gives_different_images():
    base = generate_sample(0, "test", 5).image
    assert not np.array_equal(base, generate_sample(1, "test", 5).image)
    assert not np.array_equal(base, generate_sample(0, "train", 5).image)


def test_sample_carries_label_captions_and_questions():
    s = generate_sample(0, "val", 3)
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    assert SHAPES[s.label] == s.shape
    assert len(s.captions) == 5 and all(s.shape in c for c in s.captions)
    assert len(s.qa) >= 4 and ("what shape is in the image?", s.shape) in s.qa
    assert s.sample_id == "shapes/val/000003"


def test_data_is_varied_enough_to_need_learning():
    ds = ShapesDataset("train", size=400)
    images, labels = ds.arrays()
    assert set(labels.tolist()) == set(range(len(SHAPES)))
    assert {ds.sample(i).background for i in range(100)} == set(BACKGROUNDS)
    # Mean colour alone must not give the class away: per-class mean images are close to each other.
    means = np.stack([images[labels == c].reshape(-1, 3).mean(0) for c in range(len(SHAPES))])
    assert np.ptp(means, axis=0).max() < 40


def test_tensors_are_float_in_unit_box():
    x, y = ShapesDataset("test", size=10).tensors()
    assert x.shape == (10, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert y.dtype.is_floating_point is False
