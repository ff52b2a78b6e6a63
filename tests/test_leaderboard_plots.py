"""Leaderboard plots: readable (labelled axes, eps as n/255, one line per model) and reproducible bytes."""
from __future__ import annotations

import io

from _leaderboard_data import model_rows, two_models, write_results
from PIL import Image

from simclip_bench.leaderboard.load import load_results
from simclip_bench.leaderboard.plots import figure_clean_vs_robust, figure_score_vs_eps, render_plots
from simclip_bench.leaderboard.table import build_leaderboard


def _board(directory):
    return build_leaderboard(load_results(directory), {})


def test_score_vs_eps_has_one_line_per_model_named_in_the_legend(tmp_path):
    ax = figure_score_vs_eps(_board(two_models(tmp_path)), "zeroshot").axes[0]
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["runs/robust", "tiny-clip"]


def test_score_vs_eps_labels_axes_and_writes_eps_as_n_over_255(tmp_path):
    ax = figure_score_vs_eps(_board(two_models(tmp_path)), "zeroshot").axes[0]
    assert "ε" in ax.get_xlabel() and ax.get_ylabel() == "zero-shot accuracy (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2/255", "4/255"]
    assert list(ax.get_lines()[1].get_ydata()) == [90.0, 40.0, 10.0]


def test_clean_vs_robust_has_a_panel_per_eps_with_a_point_per_model(tmp_path):
    fig = figure_clean_vs_robust(_board(two_models(tmp_path)), "zeroshot")
    assert [ax.get_title() for ax in fig.axes] == ["ε = 2/255", "ε = 4/255"]
    for ax in fig.axes:
        assert len(ax.collections) == 2
        assert ax.get_xlabel().startswith("clean") and ax.get_ylabel().startswith("robust at ε")


def test_a_dollar_in_a_model_name_is_shown_literally_not_as_mathtext(tmp_path):
    lb = _board(write_results(tmp_path, model_rows("cost$5$model", 0.9, 0.5, 0.3)))
    ax = figure_score_vs_eps(lb, "zeroshot").axes[0]
    assert ax.get_legend().get_texts()[0].get_text() == r"cost\$5\$model"


def test_plots_are_png_files_without_a_software_stamp_and_reproducible(tmp_path):
    lb = _board(two_models(tmp_path))
    first, second = render_plots(lb), render_plots(lb)
    assert sorted(first) == ["plots/zeroshot_clean_vs_robust.png", "plots/zeroshot_score_vs_eps.png"]
    assert first == second
    image = Image.open(io.BytesIO(first["plots/zeroshot_score_vs_eps.png"]))
    assert image.format == "PNG" and image.size == (700, 450)
    assert "Software" not in image.info
