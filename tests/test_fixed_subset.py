"""Fixed, paired samples: the same seeded subset for every model, nested as n grows."""
from simclip_bench.data.subset import fixed_subset


def test_same_seed_same_subset():
    assert fixed_subset(10_000, 100, seed=0) == fixed_subset(10_000, 100, seed=0)


def test_different_seed_different_subset():
    assert fixed_subset(10_000, 100, seed=0) != fixed_subset(10_000, 100, seed=1)


def test_smaller_subsets_are_prefixes_of_larger_ones():
    assert fixed_subset(5000, 1000)[:200] == fixed_subset(5000, 200)


def test_subset_has_distinct_valid_indices():
    idx = fixed_subset(300, 250, seed=3)
    assert len(set(idx)) == 250 and min(idx) >= 0 and max(idx) < 300


def test_asking_for_everything_keeps_dataset_order():
    assert fixed_subset(5, 5) == [0, 1, 2, 3, 4]
    assert fixed_subset(5, 9) == [0, 1, 2, 3, 4]
