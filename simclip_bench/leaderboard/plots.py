"""PNG plots of a leaderboard: score against eps (one line per model) and clean against robust, per task.

A robust point is the worst case over the task's full protocols at that eps (``fast`` columns are left
out: they stand for the full protocol, not beside it). The clean-against-robust panels draw each task's
frontier: the models no other model beats on both clean and robust score, joined by a line, so the
slope between two frontier points is the clean score paid for each point of robustness.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no backend
switch) under matplotlib's default style, so a user's matplotlibrc cannot change them, and saved
without the "Software" metadata, so the same leaderboard gives the same bytes.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simclip_bench.leaderboard.table import FAST_PROTOCOL, Leaderboard, eps_label

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


def _eps_points(lb: Leaderboard, task: str) -> list[tuple[float, str]]:
    """(eps, label) of the clean column and each l-inf eps of the task, in increasing eps."""
    seen: dict[float, str] = {}
    for c in lb.full_columns(task):
        seen.setdefault(c.eps, "0" if c.is_clean else eps_label(c.eps))
    return sorted(seen.items())


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (clean, robust) points no other point matches or beats on both, in increasing clean score."""
    return sorted(p for p in set(points)
                  if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in points))


def _ylabel(lb: Leaderboard, task: str) -> str:
    h = lb.headlines[task]
    return f"{h.label} ({h.unit})" if h.unit else f"{h.label} (x{h.scale:g})" if h.scale != 1 else h.label


def _colors(lb: Leaderboard) -> list:
    cycle = matplotlib.colormaps["tab10"].colors
    return [cycle[i % len(cycle)] for i in range(len(lb.entries))]


def figure_score_vs_eps(lb: Leaderboard, task: str) -> Figure:
    """Headline score against l-inf eps (x axis in n/255), one line with markers per model."""
    points = _eps_points(lb, task)
    h = lb.headlines[task]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        for entry, color in zip(lb.entries, _colors(lb), strict=False):
            pts = [(eps * 255, v * h.scale) for eps, _ in points
                   if (v := lb.worst_case(entry, task, eps)) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=False), marker="o", color=color, label=_text(entry.name))
        ax.set_xticks([eps * 255 for eps, _ in points], [label for _, label in points])
        ax.set_xlabel("perturbation budget ε (ℓ∞, pixel scale)")
        ax.set_ylabel(_ylabel(lb, task))
        ax.set_title(_text(f"{task}: {h.label} against ε ({', '.join(lb.datasets[task])})"))
        if h.unit == "%":
            ax.set_ylim(-2, 102)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        return fig


def figure_clean_vs_robust(lb: Leaderboard, task: str) -> Figure:
    """Robust against clean headline score, one panel per l-inf eps, one marker per model, with the diagonal
    and the frontier (see the module docstring)."""
    points = _eps_points(lb, task)
    robust = [(eps, label) for eps, label in points if eps > 0]
    h = lb.headlines[task]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(PANEL_INCHES * max(1, len(robust)), PANEL_INCHES))
        axes = fig.subplots(1, max(1, len(robust)), squeeze=False)[0]
        top = 100 if h.unit == "%" else max([v * h.scale for e in lb.entries for eps, _ in points
                                             if (v := lb.worst_case(e, task, eps)) is not None] + [1.0]) * 1.05
        for ax, (eps, label) in zip(axes, robust or [(None, None)], strict=False):
            ax.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=1, label="robust = clean")
            pairs = []
            for entry, color in zip(lb.entries, _colors(lb), strict=False):
                clean, adv = lb.worst_case(entry, task, 0.0), lb.worst_case(entry, task, eps) if eps else None
                if clean is not None and adv is not None:
                    pairs.append((clean * h.scale, adv * h.scale))
                    ax.scatter(*pairs[-1], s=60, color=color, label=_text(entry.name), zorder=3)
            best = frontier(pairs)
            if len(best) > 1:
                ax.plot(*zip(*best, strict=False), color="black", linewidth=1, zorder=2, label="frontier")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_aspect("equal")
            ax.set_xlabel(f"clean {_ylabel(lb, task)}")
            ax.set_ylabel(f"robust at ε = {label or '?'}" + (f" ({h.unit})" if h.unit else ""))
            ax.set_title(f"ε = {label}" if label else "no robust column")
        several = len([p for p in lb.protocols_of(task) if p != FAST_PROTOCOL]) > 1
        fig.suptitle(_text(f"{task}: clean against robust {h.label}"
                           + (" (worst case over protocols)" if several else "")))
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
