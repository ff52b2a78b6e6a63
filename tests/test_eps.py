"""Eps is written as people write it (4/255 or 0.0157) and anything else is refused clearly."""
import pytest

from simclip_bench.eps import parse_eps


@pytest.mark.parametrize("text, value, shown", [
    ("4/255", 4 / 255, "4/255"),
    ("2/255", 2 / 255, "2/255"),
    (" 8 / 255 ", 8 / 255, "8/255"),
    ("0.0157", 0.0157, "0.0157"),
    ("1", 1.0, "1"),
    ("1e-2", 0.01, "1e-2"),
])
def test_good_eps_parses_to_pixel_units(text, value, shown):
    eps = parse_eps(text)
    assert eps.value == pytest.approx(value)
    assert eps.text == shown


def test_decimal_that_is_k_over_255_is_shown_as_a_fraction():
    assert parse_eps(str(4 / 255)).text == "4/255"


@pytest.mark.parametrize("text", ["-4/255", "0", "0/255", "1.5", "300/255", "abc", "4/0", "", "nan", "inf", "4//255"])
def test_bad_eps_is_refused_with_a_fix(text):
    with pytest.raises(ValueError, match="4/255"):
        parse_eps(text)
