"""Protocol presets: the published settings field by field, overrides recorded, 2-class rule."""
import pytest

from simclip_bench.errors import UserError
from simclip_bench.tasks.protocols import PROTOCOLS, get_protocol


def test_robustvlm_preset_matches_the_published_protocol():
    # DESIGN.md, "Zero-shot protocol (RobustVLM)", and RobustVLM's code: AutoAttack 'custom' keeps APGD-CE's
    # constructor default of 5 restarts (CLIP_benchmark/clip_benchmark/metrics/zeroshot_classification.py).
    p = get_protocol("robustvlm")
    assert p.attack == "apgd-ce*5+apgd-t"
    assert p.n_iter == 100
    assert p.n_targets == 9
    assert p.norm == "linf"
    assert p.eps == ("2/255", "4/255")
    assert [e.value for e in p.eps_values()] == [2 / 255, 4 / 255]
    assert p.n_samples == 1000
    assert p.n_samples_for("imagenet1k") == 5000
    assert p.n_samples_for("cifar10") == 1000
    assert p.sample_seed == 0
    spec = p.spec()
    assert [a.name for a in spec.attacks] == ["apgd-ce", "apgd-t"]
    assert [a.n_iter for a in spec.attacks] == [100, 100]
    assert spec.attacks[1].n_targets == 9
    assert [a.n_restarts for a in spec.attacks] == [5, 1]


def test_two_class_datasets_get_apgd_ce_only_under_robustvlm():
    spec = get_protocol("robustvlm").spec_for(n_classes=2)
    assert [a.name for a in spec.attacks] == ["apgd-ce"]
    assert spec.attacks[0].n_iter == 100 and spec.attacks[0].n_restarts == 5


def test_datasets_with_enough_classes_keep_the_targeted_attack():
    assert [a.name for a in get_protocol("robustvlm").spec_for(n_classes=10).attacks] == ["apgd-ce", "apgd-t"]


def test_autoattack_preset_uses_the_reference_backend():
    spec = get_protocol("autoattack").spec()
    assert spec.backend == "reference" and spec.name == "autoattack"


def test_every_field_can_be_overridden_and_the_override_is_recorded():
    p = get_protocol("robustvlm").override(n_iter=20, eps=["8/255"], n_samples=50, n_targets=3, attack_seed=7)
    assert (p.n_iter, p.eps, p.n_samples, p.n_targets, p.attack_seed) == (20, ("8/255",), 50, 3, 7)
    assert p.spec().attacks[1].n_targets == 3
    record = p.record()
    assert record["protocol"] == "robustvlm"
    assert set(record["overridden"]) == {"n_iter", "eps", "n_samples", "n_targets", "attack_seed"}


def test_overriding_n_samples_applies_to_imagenet_too():
    assert get_protocol("robustvlm").override(n_samples=10).n_samples_for("imagenet1k") == 10


def test_none_means_keep_the_preset():
    assert get_protocol("robustvlm").override(n_iter=None, eps=None) == get_protocol("robustvlm")


def test_unknown_protocol_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'robustvlm'"):
        get_protocol("robustvml")


@pytest.mark.parametrize("field,value", [("n_iter", 0), ("n_samples", -1), ("n_targets", 0), ("norm", "l1")])
def test_impossible_values_are_refused(field, value):
    with pytest.raises(UserError):
        get_protocol("default").override(**{field: value}).validate()


def test_l2_accepts_radii_above_one_but_linf_does_not():
    get_protocol("default").override(norm="l2", eps=["2.0"]).validate()
    with pytest.raises(UserError, match="outside"):
        get_protocol("default").override(eps=["2.0"]).validate()


def test_all_presets_validate():
    for p in PROTOCOLS.values():
        p.validate()
