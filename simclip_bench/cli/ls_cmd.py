"""``simclip ls``."""
from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from simclip_bench.cli.app import app, stdout


def _complete_kind(incomplete: str) -> list[str]:
    from simclip_bench.jobs.listing import KINDS

    return [k for k in KINDS if k.startswith(incomplete)]


@app.command(name="ls", epilog="""[bold]Examples[/bold]

  simclip ls models      # built-in models and public robust checkpoints
  simclip ls attacks     # what --attack takes
  simclip ls objectives  # what 'simclip train --objective' takes""")
def ls(
    kind: str = typer.Argument(..., help="models | datasets | attacks | objectives | protocols | tasks",
                               autocompletion=_complete_kind),
    plain: bool = typer.Option(False, "--plain", help="Tab-separated lines, for scripts."),
) -> None:
    """List what is available: models (with provenance), datasets, attacks, objectives, protocols, tasks."""
    from simclip_bench.jobs.listing import listing

    found = listing(kind)
    if plain:
        for row in found.rows:
            print("\t".join(row))
        for line in found.details:
            print(line)
        return
    table = Table(title=found.kind, show_lines=False)
    for i, col in enumerate(found.columns):
        table.add_column(col, overflow="fold", no_wrap=i == 0)
    for row in found.rows:
        table.add_row(*(escape(v) for v in row))
    stdout.print(table)
    for line in found.details:
        stdout.print(escape(line))
    if found.note:
        stdout.print(escape(found.note))
