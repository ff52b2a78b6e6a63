"""``simclip pretrain-builtin``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, say, stdout
from simclip_bench.cli.out_dirs import check_out_file
from simclip_bench.errors import UserError


@app.command(name="pretrain-builtin", epilog="""[bold]Example[/bold]

  # regenerate the shipped weights elsewhere
  simclip pretrain-builtin --out /tmp/tiny.safetensors""")
def pretrain_builtin_cmd(
    steps: int = typer.Option(3000, help="Optimizer steps."),
    out: Path = typer.Option(None, help="Where to write the weights (default: the package's shipped file)."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Rebuild the built-in tiny CLIP's weights by contrastive pretraining on the generated shapes."""
    from simclip_bench.train.pretrain_builtin import PretrainConfig, pretrain_builtin

    if steps <= 0:
        raise UserError(f"--steps must be a positive integer, got {steps}")
    cfg = PretrainConfig(steps=steps, seed=seed)
    if out:
        cfg.out = str(out)
    check_out_file(cfg.out)
    summary = pretrain_builtin(cfg, log=say)
    stdout.print(f"wrote {cfg.out}: val zero-shot accuracy {summary['val_zero_shot_accuracy']:.1%}", markup=False)
