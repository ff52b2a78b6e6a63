"""``simclip pretrain-vlm``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, progress_bar, say, stdout
from simclip_bench.cli.out_dirs import check_out_file
from simclip_bench.errors import UserError


@app.command(name="pretrain-vlm", epilog="""[bold]Examples[/bold]

  simclip pretrain-vlm    # the shipped tiny-VLM weights (10 minutes, 2 cores)
  simclip pretrain-vlm --out /tmp/tiny-vlm.safetensors --steps 500""")
def pretrain_vlm_cmd(
    steps: int = typer.Option(4000, help="Optimizer steps."),
    batch_size: int = typer.Option(64, help="Examples per step."),
    train_size: int = typer.Option(20000, help="Generated training images."),
    feature_noise: float = typer.Option(0.04, help="Std of the Gaussian noise added to the unit-norm image embedding."),
    seed: int = typer.Option(0, help="Seed."),
    out: Path = typer.Option(None, help="Where to write the weights (default: the package's shipped file)."),
) -> None:
    """Train the built-in tiny VLM (projector + decoder on the frozen tiny-clip tower) on the shapes captions and QA."""
    from simclip_bench.vlm.tiny_train import TinyVLMTrainConfig, train_tiny_vlm

    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--train-size", train_size)):
        if value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value}")
    if feature_noise < 0:
        raise UserError(f"--feature-noise must be >= 0, got {feature_noise}")
    cfg = TinyVLMTrainConfig(steps=steps, batch_size=batch_size, train_size=train_size, feature_noise=feature_noise,
                             seed=seed)
    if out:
        cfg.out = str(out)
    check_out_file(cfg.out)
    with progress_bar() as bar:
        task = bar.add_task("pretrain-vlm", total=steps, info="")
        summary = train_tiny_vlm(cfg, log=say,
                                 progress=lambda step, loss: bar.update(task, completed=step, info=f"loss {loss:.3f}"))
    stdout.print(f"wrote {cfg.out}: val CIDEr-D {summary['val_cider']:.3f}, VQA accuracy "
                 f"{summary['val_vqa_accuracy']:.1%} ({summary['seconds']:.0f} s)", markup=False)
