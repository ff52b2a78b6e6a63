"""Eps is written as people write it (4/255 or 0.0157) and anything else is refused clearly."""
import pytest

from simclip_bench.attacks.eps import parse_eps


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


@pytest.mark.parametrize("text, fix", [("4/255,8/255", "--eps 4/255 --eps 8/255"),
                                       ("2/255, 4/255;8/255", "--eps 2/255 --eps 4/255 --eps 8/255"),
                                       ("4/255 8/255", "--eps 4/255 --eps 8/255")])
def test_a_list_in_one_eps_gets_the_hint_to_repeat_the_option(text, fix):
    with pytest.raises(ValueError, match=f"is {len(fix.split()) // 2} eps in one value: give each its own --eps, "
                                         f"e.g. {fix}"):
        parse_eps(text)


@pytest.mark.parametrize("args, fix", [
    (["eval", "--eps", "4", "/255"], "--eps 4 /255: the shell split one eps into 2 arguments; write it without "
                                     "spaces: --eps 4/255"),
    (["eval", "--eps", "4/", "255", "--n-samples", "3"], "write it without spaces: --eps 4/255"),
    (["attack", "--eps", "8", "/", "255"], "split one eps into 3 arguments; write it without spaces: --eps 8/255"),
    (["train", "--eps=2", "/255"], "write it without spaces: --eps 2/255"),
])
def test_an_eps_split_by_the_shell_gets_the_hint_to_drop_the_spaces(args, fix):
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("simclip: error: ") and fix in lines[0]


@pytest.mark.parametrize("text, meant", [("4", "4/255"), ("8", "8/255"), ("2.5", "2.5/255"), ("255", "255/255")])
def test_an_eps_in_pixel_levels_gets_asked_whether_it_meant_levels_over_255(text, meant):
    with pytest.raises(ValueError, match=rf"is outside \(0, 1\] \(did you mean {meant}\?\)"):
        parse_eps(text)


@pytest.mark.parametrize("text, norm", [("300", "linf"), ("-4", "linf"), ("4", "l2")])
def test_no_such_guess_where_levels_over_255_would_not_fit_or_the_norm_is_l2(text, norm):
    try:
        parse_eps(text, norm)
    except ValueError as e:
        assert "did you mean" not in str(e)
