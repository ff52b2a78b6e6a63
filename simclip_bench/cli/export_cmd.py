"""``simclip export``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, stdout, unsafe_pickle_option, warn_unsafe_pickle
from simclip_bench.cli.out_dirs import check_out_dir


@app.command(epilog="""[bold]Examples[/bold]

  simclip export runs/my-run --format open_clip --out exported/my-run-oc
  # for LLaVA: CLIPVisionModel.from_pretrained("exported/my-run-hf")
  simclip export runs/my-run --format hf --out exported/my-run-hf""")
def export(
    model: str = typer.Argument(..., help="A run directory of 'simclip train' (or any model spec)."),
    format: str = typer.Option(..., "--format", help="open_clip | hf (transformers CLIPVisionModel directory)."),
    out: Path = typer.Option(..., help="New directory to write (must not exist or be empty)."),
    allow_unsafe_pickle: bool = unsafe_pickle_option(),
) -> None:
    """Export a fine-tuned encoder as an open_clip checkpoint or an HF CLIPVisionModel directory."""
    warn_unsafe_pickle(allow_unsafe_pickle)
    check_out_dir(out)
    from simclip_bench.models.export import export as run_export

    info = run_export(model, format, out, allow_unsafe_pickle)
    stdout.print(f"wrote {out}\nload with: {info['load']}", soft_wrap=True, markup=False)
