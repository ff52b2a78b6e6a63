"""Leaderboard plots: readable (labelled axes, eps as n/255, one line per model) and reproducible bytes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from _leaderboard_data import HASH_B, model_rows, two_models, write_results
from PIL import Image

from simclip_bench.leaderboard.load import load_results
from simclip_bench.leaderboard.plots import (
    MARKER_AREA,
    figure_clean_vs_robust,
    figure_score_vs_eps,
    marker_places,
    render_plots,
)
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


def _centres(fig) -> dict[str, np.ndarray]:
    fig.canvas.draw()
    ax = fig.axes[0]
    return {c.get_label(): c.get_offset_transform().transform(c.get_offsets()[0]) for c in ax.collections}


def test_models_with_equal_or_close_scores_stay_visible_each_with_its_own_marker(tmp_path):
    # the committed showcase's case: two models at equal scores, a third 2.5 points below them
    rows = model_rows("a", 0.875, 0.775, 0.30) + model_rows("b", 0.875, 0.775, 0.30, checkpoint_hash=HASH_B)
    rows += model_rows("c", 0.875, 0.75, 0.30, checkpoint_hash="c" * 64)
    rows += model_rows("d", 0.40, 0.20, 0.10, checkpoint_hash="d" * 64)
    fig = figure_clean_vs_robust(_board(write_results(tmp_path, rows)), "zeroshot")
    centres = _centres(fig)
    diameter = MARKER_AREA ** 0.5 * fig.dpi / 72  # scatter's s is the area in points²; pixels here
    for first, second in [("a", "b"), ("a", "c"), ("b", "c")]:
        assert np.hypot(*(centres[first] - centres[second])) > diameter, (first, second)
    assert np.allclose(centres["d"], fig.axes[0].transData.transform((40.0, 20.0)))  # alone: where it is
    assert len({tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in fig.axes[0].collections}) == 4  # shapes


def test_marker_places_leave_a_lone_point_where_it_is_and_put_a_cluster_on_a_circle_around_its_mean():
    places = marker_places([(10.0, 10.0), (80.0, 50.0), (10.0, 10.0), (10.0, 11.5)], scale=100.0)
    assert places[1] == (80.0, 50.0, 0.0, 0.0)
    cluster = [places[i] for i in (0, 2, 3)]
    assert all(p[:2] == pytest.approx((10.0, 10.5)) for p in cluster)
    assert places[3][3] > 0  # the highest point keeps the top of the circle
    offsets = [np.array(p[2:]) for p in cluster]
    assert all(np.hypot(*(a - b)) > MARKER_AREA ** 0.5 for i, a in enumerate(offsets) for b in offsets[i + 1:])
