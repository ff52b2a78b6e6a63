"""``simclip leaderboard``."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from simclip_bench.cli.app import app, console, stdout
from simclip_bench.cli.out_dirs import check_out_dir


@app.command(epilog="""[bold]Examples[/bold]

  simclip leaderboard simclip-results --out simclip-results   # beside results
  simclip leaderboard results --out /tmp/lb    # the committed ones, elsewhere
  simclip leaderboard results --out results --check     # CI: fail when stale""")
def leaderboard(
    results_dir: Path = typer.Argument(..., help="Directory holding results.csv (and model_cards.json)."),
    out: Path = typer.Option(None, help="Where to write the leaderboard. Default: RESULTS_DIR."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the files in OUT differ from a "
                                                       "fresh render."),
) -> None:
    """Render result files into a leaderboard: LEADERBOARD.md, leaderboard.csv, leaderboard.html and PNG plots.

    Nothing is recomputed: every number comes from results.csv.
    """
    from simclip_bench.leaderboard.load import check_results_dir
    from simclip_bench.leaderboard.render import check_leaderboard, render_leaderboard

    out = out or results_dir
    if not check:
        check_results_dir(results_dir)  # the input first: results.csv given for its folder gets the folder to pass
        check_out_dir(out)
    if check:
        problems = check_leaderboard(results_dir, out)
        for p in problems:
            console.print(f"[red]{escape(p)}[/red]")
        if problems:
            console.print(f"the leaderboard in {out} is not what {results_dir} renders to; "
                          f"run: simclip leaderboard {results_dir} --out {out}", markup=False)
            raise typer.Exit(1)
        stdout.print(f"{out}: up to date with {results_dir}", markup=False)
        return
    written = render_leaderboard(results_dir, out)
    stdout.print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written[:3])
                 + (f" and {len(written) - 3} plots" if len(written) > 3 else ""), markup=False)
