"""PNG plots of a leaderboard: score against eps (one line per model) and clean against robust, per task.

A robust point is the worst case over the task's full protocols at that eps (``fast`` columns are left
out: they stand for the full protocol, not beside it). The clean-against-robust panels draw each task's
frontier: the models no other model beats on both clean and robust score, joined by a line, so the
slope between two frontier points is the clean score paid for each point of robustness. Each model has its
own marker shape as well as its colour, and markers that would cover each other (equal scores, or scores
closer than a marker) are drawn a few points apart on a circle around their mean position, so that every
model stays visible; the frontier joins the true positions.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no backend
switch) under matplotlib's default style, so a user's matplotlibrc cannot change them, and saved
without the "Software" metadata, so the same leaderboard gives the same bytes.
"""
from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from simclip_bench.leaderboard.table import FAST_PROTOCOL, Leaderboard, eps_label

DPI = 100
PANEL_INCHES = 4.5  # width and height of one clean-against-robust panel, before its legend
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p", "*", "h")
MARKER_AREA = 60  # points², as scatter's s: about 8 points across
# Of the axis range: two markers closer than this on both axes would touch (a marker is about 8 points across, a
# panel's axes about 240 points for the whole range, so 3.3 % of it; a little more keeps them apart).
NEAR = 0.04
SPREAD_POINTS = 6.0  # the least radius of the circle on which covering markers are drawn
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


def marker_places(points: list[tuple[float, float]], scale: float) -> list[tuple[float, float, float, float]]:
    """Where to draw each point's marker: ``(x, y, dx, dy)``, data coordinates plus an offset in points.

    A point with no other within ``NEAR * scale`` on both axes is drawn where it is. Points that would cover
    each other (closer than that, also through a chain of neighbours) are drawn on a circle around their
    mean, in the order of their directions from it and turned to keep them (equal points in their given
    order), the circle wide enough that neighbouring markers do not touch.
    """
    clusters: list[list[int]] = []
    for i, (x, y) in enumerate(points):
        near = [c for c in clusters if any(abs(x - points[j][0]) <= NEAR * scale and abs(y - points[j][1])
                                           <= NEAR * scale for j in c)]
        merged = [i] + [j for c in near for j in c]
        clusters = [c for c in clusters if c not in near] + [sorted(merged)]
    places = [(x, y, 0.0, 0.0) for x, y in points]
    for cluster in clusters:
        k = len(cluster)
        if k == 1:
            continue
        cx = sum(points[i][0] for i in cluster) / k
        cy = sum(points[i][1] for i in cluster) / k
        radius = max(SPREAD_POINTS, 0.6 * MARKER_AREA ** 0.5 / math.sin(math.pi / k))

        def clockwise_from_top(i: int, cx: float = cx, cy: float = cy) -> float:
            dx, dy = points[i][0] - cx, points[i][1] - cy
            return (math.pi / 2 - math.atan2(dy, dx)) % (2 * math.pi) if (dx, dy) != (0.0, 0.0) else -1.0

        order = sorted(cluster, key=clockwise_from_top)
        start = max(clockwise_from_top(order[0]), 0.0)  # the circle turned so the points keep their directions
        for slot, i in enumerate(order):
            angle = math.pi / 2 - start - 2 * math.pi * slot / k
            places[i] = (cx, cy, radius * math.cos(angle), radius * math.sin(angle))
    return places


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
            pairs, shown = [], []
            for i, (entry, color) in enumerate(zip(lb.entries, _colors(lb), strict=False)):
                clean, adv = lb.worst_case(entry, task, 0.0), lb.worst_case(entry, task, eps) if eps else None
                if clean is not None and adv is not None:
                    pairs.append((clean * h.scale, adv * h.scale))
                    shown.append((entry, color, MARKERS[i % len(MARKERS)]))
            for (x, y, dx, dy), (entry, color, marker) in zip(marker_places(pairs, top), shown, strict=True):
                moved = offset_copy(ax.transData, fig=fig, x=dx, y=dy, units="points")
                ax.scatter(x, y, s=MARKER_AREA, color=color, marker=marker, label=_text(entry.name), zorder=3,
                           transform=moved, edgecolors="white", linewidths=0.5)
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
