"""Plot legends are never cut off at the edges of the image, whatever the model names and the number of eps."""
from __future__ import annotations

import pytest
from _leaderboard_data import row, write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg

from simclip_bench.leaderboard.load import load_results
from simclip_bench.leaderboard.plots import figure_clean_vs_robust
from simclip_bench.leaderboard.table import build_leaderboard

LONG = "runs/20261126-183725-simclip-anchored-eps4-steps250"


def _one_eps(directory, names):
    rows = []
    for i, name in enumerate(names):
        rows += [row(name, 0.0, 0.9 - 0.1 * i, checkpoint_hash=str(i) * 64),
                 row(name, 4 / 255, 0.1 + 0.2 * i, checkpoint_hash=str(i) * 64)]
    return build_leaderboard(load_results(write_results(directory, rows)), {})


@pytest.mark.parametrize("names", [["tiny-clip", "tiny-clip + simclip-anchored 4/255"],
                                   ["tiny-clip", LONG, "tiny-clip + fare 4/255", "hf-hub:chs20/fare4-clip"]],
                         ids=["two-models", "four-models"])
def test_clean_vs_robust_legend_fits_in_the_image_below_the_panel_with_one_eps(names, tmp_path):
    fig = figure_clean_vs_robust(_one_eps(tmp_path, names), "zeroshot")
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(["robust = clean", "frontier", *names])
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    box, page = legend.get_window_extent(renderer), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, (box, page)
    for ax in fig.axes:
        assert box.y1 <= ax.get_tightbbox(renderer).y0  # under the panel and its axis labels, not on them
