"""--attack names: singles, '+' ensembles, the reference backends, and clear errors."""
import pytest

from simclip_bench.attacks.registry import resolve_attack
from simclip_bench.errors import UserError


def test_robustvlm_protocol_is_apgd_ce_with_5_restarts_then_apgd_t_with_9_targets_at_100_iterations():
    """RobustVLM runs AutoAttack version='custom' with attacks_to_run=('apgd-ce', 'apgd-t'): its APGD-CE keeps
    the constructor's n_restarts=5, APGD-T has 1 restart and 9 targets."""
    spec = resolve_attack("robustvlm")
    assert spec.name == "apgd-ce*5+apgd-t"
    assert [a.name for a in spec.attacks] == ["apgd-ce", "apgd-t"]
    assert [a.n_iter for a in spec.attacks] == [100, 100]
    assert [a.n_restarts for a in spec.attacks] == [5, 1]
    assert spec.attacks[1].n_targets == 9 and spec.attacks[1].loss == "dlr-targeted"
    assert resolve_attack("apgd-ce*5+apgd-t") == spec


def test_restarts_are_written_with_a_star_and_kept_through_overrides():
    spec = resolve_attack("apgd-ce*3+apgd-t*2").with_iterations(20).with_targets(4)
    assert [a.n_restarts for a in spec.attacks] == [3, 2] and spec.name == "apgd-ce*3+apgd-t*2"
    assert resolve_attack("apgd-ce+apgd-t").attacks[0].n_restarts == 1
    ref = resolve_attack("ref:apgd-ce*5+apgd-t")
    assert ref.name == "ref:apgd-ce*5+apgd-t" and ref.attacks[0].n_restarts == 5


def test_alias_and_case_are_accepted():
    assert resolve_attack("APGD").name == "apgd-ce"


def test_reference_backends():
    assert resolve_attack("autoattack").backend == "reference"
    ref = resolve_attack("ref:apgd-ce+apgd-t")
    assert ref.backend == "reference" and ref.reference_attacks == ("apgd-ce", "apgd-t")


def test_iterations_override_spares_squares_query_budget():
    spec = resolve_attack("apgd-ce+square").with_iterations(7)
    assert [a.n_iter for a in spec.attacks] == [7, 5000]


@pytest.mark.parametrize("text, says", [
    ("apgd-cee", "did you mean 'apgd-ce'"),
    ("apgd-ce+sqare", "did you mean 'square'"),
    ("ref:pgd", "reference backend has no pgd"),
    ("", "empty --attack"),
    ("apgd-ce*0", "from 1 to 100"),
    ("apgd-ce*x", "from 1 to 100"),
    ("square*5", "apply to the APGD attacks only"),
])
def test_unknown_attacks_get_a_suggestion(text, says):
    with pytest.raises(UserError, match=says):
        resolve_attack(text)
