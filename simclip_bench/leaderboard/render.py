"""Render a results directory into leaderboard files, or check that committed ones are up to date.

Everything is rendered in memory first; only then is each file written through a temporary file
and a rename, so a failure leaves the previous leaderboard intact.
"""
from __future__ import annotations

from pathlib import Path

from simclip_bench.errors import UserError
from simclip_bench.leaderboard.load import check_results_dir, load_cards, load_results
from simclip_bench.leaderboard.plots import render_plots
from simclip_bench.leaderboard.render_csv import render_csv
from simclip_bench.leaderboard.render_html import render_html
from simclip_bench.leaderboard.render_md import render_markdown
from simclip_bench.leaderboard.table import build_leaderboard
from simclip_bench.models.checkpoint import atomic_write_bytes

MARKDOWN_FILE = "LEADERBOARD.md"
CSV_FILE = "leaderboard.csv"
HTML_FILE = "leaderboard.html"
PLOTS_DIR = "plots"


def build_outputs(results_dir: Path) -> dict[str, bytes]:
    """Every leaderboard file, by path relative to the output directory, as bytes."""
    lb = build_leaderboard(load_results(results_dir), load_cards(results_dir))
    if not lb.entries:
        raise UserError(f"{results_dir} has no rows with a headline metric; nothing to rank")
    plots = render_plots(lb)
    return {MARKDOWN_FILE: render_markdown(lb).encode(), CSV_FILE: render_csv(lb).encode(),
            HTML_FILE: render_html(lb, plots).encode(), **plots}


def _stale_plots(out_dir: Path, outputs: dict[str, bytes]) -> list[Path]:
    plots = Path(out_dir) / PLOTS_DIR
    return sorted(p for p in plots.glob("*.png") if f"{PLOTS_DIR}/{p.name}" not in outputs) if plots.is_dir() else []


def render_leaderboard(results_dir: Path, out_dir: Path) -> list[Path]:
    """Write the leaderboard of ``results_dir`` into ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    check_results_dir(results_dir)  # first: --out defaults to RESULTS_DIR, so a results.csv given there is both
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a directory")
    outputs = build_outputs(results_dir)
    written = []
    for rel, data in outputs.items():
        atomic_write_bytes(out_dir / rel, data)
        written.append(out_dir / rel)
    for stale in _stale_plots(out_dir, outputs):
        stale.unlink()
    return written


def check_leaderboard(results_dir: Path, out_dir: Path) -> list[str]:
    """What differs between the committed leaderboard in ``out_dir`` and a fresh render (empty: up to date)."""
    out_dir = Path(out_dir)
    problems = []
    outputs = build_outputs(results_dir)
    for rel, data in outputs.items():
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.read_bytes() != data:
            problems.append(f"{rel} differs")
    problems += [f"{PLOTS_DIR}/{p.name} is stale" for p in _stale_plots(out_dir, outputs)]
    return problems
