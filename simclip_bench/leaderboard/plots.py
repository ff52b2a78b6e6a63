"""PNG plots of a leaderboard: score against eps (one line per model) and clean against robust, per task.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no backend
switch) under matplotlib's default style, so a user's matplotlibrc cannot change them, and saved
without the "Software" metadata, so the same leaderboard gives the same bytes.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simclip_bench.leaderboard.table import LINF, Column, Leaderboard

DPI = 100
PANEL_INCHES = 4.5  # width and height of one clean-against-robust panel, before its legend
_STYLE = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}
_STYLE.update({"font.family": ["DejaVu Sans"], "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "simclip"})


def _text(s: str) -> str:
    """A user string shown literally: matplotlib would read ``$...$`` as mathtext."""
    return s.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _linf_columns(lb: Leaderboard, task: str) -> list[Column]:
    return [c for c in lb.columns_of(task) if c.is_clean or (c.norm == LINF and not c.fast)]


def _ylabel(lb: Leaderboard, task: str) -> str:
    h = lb.headlines[task]
    return f"{h.label} ({h.unit})" if h.unit else f"{h.label} (x{h.scale:g})" if h.scale != 1 else h.label


def _colors(lb: Leaderboard) -> list:
    cycle = matplotlib.colormaps["tab10"].colors
    return [cycle[i % len(cycle)] for i in range(len(lb.entries))]


def figure_score_vs_eps(lb: Leaderboard, task: str) -> Figure:
    """Headline score against l-inf eps (x axis in n/255), one line with markers per model."""
    cols = _linf_columns(lb, task)
    h = lb.headlines[task]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        for entry, color in zip(lb.entries, _colors(lb), strict=False):
            pts = [(c.eps * 255, entry.cells[c].value * h.scale) for c in cols if c in entry.cells]
            if pts:
                ax.plot(*zip(*pts, strict=False), marker="o", color=color, label=_text(entry.name))
        ax.set_xticks([c.eps * 255 for c in cols], ["0" if c.is_clean else c.label for c in cols])
        ax.set_xlabel("perturbation budget ε (ℓ∞, pixel scale)")
        ax.set_ylabel(_ylabel(lb, task))
        ax.set_title(_text(f"{task}: {h.label} against ε ({', '.join(lb.datasets[task])})"))
        if h.unit == "%":
            ax.set_ylim(-2, 102)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        return fig


def figure_clean_vs_robust(lb: Leaderboard, task: str) -> Figure:
    """Robust against clean headline score, one panel per l-inf eps, one marker per model, with the diagonal."""
    cols = _linf_columns(lb, task)
    clean = next((c for c in cols if c.is_clean), None)
    robust = [c for c in cols if not c.is_clean]
    h = lb.headlines[task]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(PANEL_INCHES * max(1, len(robust)), PANEL_INCHES))
        axes = fig.subplots(1, max(1, len(robust)), squeeze=False)[0]
        top = 100 if h.unit == "%" else max([e.cells[c].value * h.scale for e in lb.entries for c in cols
                                             if c in e.cells] + [1.0]) * 1.05
        for ax, col in zip(axes, robust or [None], strict=False):
            ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="robust = clean")
            for entry, color in zip(lb.entries, _colors(lb), strict=False):
                if clean in entry.cells and col in entry.cells:
                    ax.scatter(entry.cells[clean].value * h.scale, entry.cells[col].value * h.scale, s=60,
                               color=color, label=_text(entry.name), zorder=3)
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_aspect("equal")
            ax.set_xlabel(f"clean {_ylabel(lb, task)}")
            ax.set_ylabel(f"robust at ε = {col.label if col else '?'}" + (f" ({h.unit})" if h.unit else ""))
            ax.set_title(f"ε = {col.label}" if col else "no robust column")
        fig.suptitle(_text(f"{task}: clean against robust {h.label}"))
        _legend_below(fig, *axes[0].get_legend_handles_labels())
        return fig


def _legend_below(fig: Figure, handles: list, labels: list[str], max_columns: int = 3) -> None:
    """The figure's legend under its panels, whole: in as many columns (up to ``max_columns``) as fit the
    figure's width, the figure widened when even one column does not fit and made taller by the legend's
    height, so that no entry is cut off at an edge of the image or drawn over a panel."""
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    margin = 0.1 * fig.dpi  # pixels kept free at each side
    for ncol in range(min(max_columns, len(labels)), 0, -1):
        legend = fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize="small", frameon=False)
        box = legend.get_window_extent(renderer)
        if box.width + 2 * margin <= fig.bbox.width or ncol == 1:
            break
        legend.remove()
    if box.width + 2 * margin > fig.bbox.width:
        fig.set_figwidth((box.width + 2 * margin) / fig.dpi)
    legend_height = (box.y1 + margin) / fig.dpi  # inches under the panels: the legend's top, and a margin
    fig.set_figheight(fig.get_figheight() + legend_height)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))


def render_plots(lb: Leaderboard) -> dict[str, bytes]:
    """``plots/<task>_score_vs_eps.png`` and ``plots/<task>_clean_vs_robust.png`` for every task."""
    out = {}
    for task in lb.tasks:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in task)
        with matplotlib.rc_context(_STYLE):  # savefig reads rcParams too
            out[f"plots/{safe}_score_vs_eps.png"] = _png(figure_score_vs_eps(lb, task))
            out[f"plots/{safe}_clean_vs_robust.png"] = _png(figure_clean_vs_robust(lb, task))
    return out
