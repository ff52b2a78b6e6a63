"""The ``simclip`` command line: a thin layer that parses options, calls the library, renders with rich."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exceptions

from simclip_bench.eps import Eps, parse_eps
from simclip_bench.errors import UserError

console = Console(stderr=True)
stdout = Console()


class OneLineErrors(TyperGroup):
    """Every bad input ends as one line on stderr and exit code 2: no usage box, no traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        args = list(sys.argv[1:] if args is None else args)
        if not args:
            args = ["--help"]
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as e:
            print(e.format_message(), file=sys.stderr)
            sys.exit(0)
        except click_exceptions.ClickException as e:
            where = f"simclip {e.ctx.info_name}" if getattr(e, "ctx", None) and e.ctx.parent else "simclip"
            _fail(f"{e.format_message()} (see '{where} --help')")
        except UserError as e:
            _fail(str(e))
        except click_exceptions.Abort:
            console.print("aborted")
            sys.exit(130)
        except MemoryError:
            _fail("out of memory; lower --batch-size")
        except Exception as e:  # CUDA OOM is a RuntimeError subclass: map it, re-raise everything else
            if type(e).__name__ == "OutOfMemoryError":
                _fail("out of GPU memory; lower --batch-size")
            raise
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _fail(message: str) -> None:
    print(f"simclip: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


app = typer.Typer(cls=OneLineErrors, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="Sim-CLIP adversarial fine-tuning and honest robustness evaluation of CLIP models.")


def _eps_list(values: list[str], option: str = "--eps") -> list[Eps]:
    try:
        return [parse_eps(v) for v in values]
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TextColumn("ETA"), TimeRemainingColumn(compact=True),
                    console=console, transient=False)


@app.command(epilog="""[bold]Examples[/bold]\n
  simclip train                                   # Sim-CLIP on the built-in tiny CLIP, a few minutes on a CPU\n
  simclip train --objective simclip --steps 500 --lr 5e-5\n
  simclip train --model ViT-B-32:openai --eps 2/255 --device cuda""")
def train(
    model: str = typer.Option("tiny-clip", help="Model spec to fine-tune (built-in name, ARCH:TAG, hf-hub:..., path)."),
    objective: str = typer.Option(
        None, help="simclip (paper) or simclip-anchored (released code). Default: simclip-anchored."),
    eps: str = typer.Option("4/255", help="l-inf radius of the training attack, pixel units (4/255 or 0.0157)."),
    steps: int = typer.Option(None, help="Optimizer steps. Default: 250 built-in, 20000 otherwise (RobustVLM)."),
    batch_size: int = typer.Option(None, help="Images per step. Default: 64 built-in, 128 otherwise."),
    lr: float = typer.Option(None, help="Peak AdamW learning rate. Default: 1e-3 built-in, 1e-5 otherwise."),
    weight_decay: float = typer.Option(None, help="AdamW weight decay. Default: 1e-4."),
    warmup_steps: int = typer.Option(None, help="Linear warm-up steps. Default: 25 built-in, 1400 otherwise."),
    attack_steps: int = typer.Option(10, help="PGD steps of the inner maximisation."),
    seed: int = typer.Option(0, help="Seed for data order, attack starts and init."),
    train_size: int = typer.Option(20000, help="Generated training images (built-in data)."),
    out: Path = typer.Option(None, help="Run directory (default runs/<time>-<objective>)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Adversarially fine-tune a CLIP vision encoder with Sim-CLIP; writes a run directory."""
    from simclip_bench.train.trainer import TrainConfig
    from simclip_bench.train.trainer import train as run_training

    cfg = TrainConfig(model=model, eps=eps, attack_steps=attack_steps, seed=seed, device=device, train_size=train_size,
                      out=str(out) if out else None)
    for name, value in (("objective", objective), ("steps", steps), ("batch_size", batch_size), ("lr", lr),
                        ("warmup_steps", warmup_steps), ("weight_decay", weight_decay)):
        if value is not None:
            setattr(cfg, name, value)
    cfg.validate()
    with _progress() as bar:
        task = bar.add_task("train", total=cfg.steps, info="")

        def on_progress(step: int, record: dict) -> None:
            info = (f"loss {record['loss']:+.3f} std√d {record['embedding_std_sqrt_d']:.2f} "
                    f"{record['images_per_s']:.0f} img/s")
            bar.update(task, completed=step, info=info)

        run_dir = run_training(cfg, progress=on_progress, log=console.print)
    stdout.print(str(run_dir))


@app.command(name="eval", epilog="""[bold]Examples[/bold]\n
  simclip eval                                    # built-in base model vs. latest 'simclip train' run\n
  simclip eval --attack apgd --eps 2/255 --eps 4/255\n
  simclip eval --attack apgd-ce+apgd-t --eps 4/255      # RobustVLM's zero-shot protocol\n
  simclip eval --attack autoattack --eps 4/255          # standard AutoAttack (reference code)\n
  simclip eval --model tiny-clip --model runs/my-run --n-samples 200""")
def eval_(
    model: list[str] = typer.Option(
        None, help="Model spec; repeat for several. Default: tiny-clip and the latest run under runs/."),
    dataset: str = typer.Option("shapes", help="Dataset (built-in: shapes)."),
    attack: str = typer.Option(
        "apgd-ce", help="apgd-ce | apgd-dlr | apgd-t | square | pgd, an ensemble joined with '+' "
                        "(apgd-ce+apgd-t = RobustVLM), autoattack, ref:<ensemble>, or none (clean only)."),
    eps: list[str] = typer.Option(
        None, help="l-inf radius, pixel units (4/255 or 0.0157); repeat for several. Default 4/255."),
    n_samples: int = typer.Option(1000, help="Evaluate the first N test images."),
    iterations: int = typer.Option(100, help="Iterations of each gradient attack (Square keeps its 5000 queries)."),
    batch_size: int = typer.Option(500, help="Working-batch size of the attacks."),
    seed: int = typer.Option(0, help="Attack seed."),
    out: Path = typer.Option(Path("simclip-results"), help="Directory of results.csv and samples.csv (appended)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Zero-shot accuracy, clean and under attack; prints a table and appends tidy rows to OUT/results.csv."""
    from simclip_bench.evaluate import EvalRequest, run_eval, validate

    request = EvalRequest(models=list(model or []), dataset=dataset, attack=attack,
                          eps=_eps_list(eps or ["4/255"]), n_samples=n_samples, n_iter=iterations,
                          batch_size=batch_size, seed=seed, out=out, device=device)
    validate(request)
    if not model:
        from simclip_bench.evaluate import default_models

        found = default_models(request.runs_dir)
        if len(found) == 1:
            console.print(f"no finished 'simclip train' run under {request.runs_dir}/: evaluating {found[0]} only")
        request.models = found
    with _progress() as bar:
        result = run_eval(request, progress=bar)
    table = Table(title=f"zero-shot accuracy on {dataset} (n={n_samples})")
    for col in ("model", "attack", "eps", "accuracy", "95% CI", "seconds"):
        table.add_column(col, justify="right" if col not in ("model", "attack") else "left")
    for r in result.rows:
        table.add_row(r["model"], r["attack"], r["eps_text"], f"{100 * r['value']:.1f}%",
                      f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}", f"{r['seconds']:.1f}")
    stdout.print(table)
    for flag in result.flags:
        stdout.print(f"[bold red]masking check:[/] {flag}")
    stdout.print(f"results: {result.results_path}  per-sample: {result.samples_path}")


@app.command(epilog="""[bold]Examples[/bold]\n
  simclip attack                                  # 8 test images against the built-in model\n
  simclip attack --model runs/my-run --n-images 4 --eps 8/255\n
  simclip attack --image cat.png --image dog.jpg --out attacks-out""")
def attack(
    model: str = typer.Option("tiny-clip", help="Model spec to attack."),
    image: list[Path] = typer.Option(None, help="Image file to attack; repeat for several. Default: test images."),
    n_images: int = typer.Option(8, help="Number of built-in test images (ignored with --image)."),
    eps: str = typer.Option("4/255", help="l-inf radius, pixel units."),
    iterations: int = typer.Option(100, help="APGD iterations."),
    seed: int = typer.Option(0, help="Attack seed."),
    out: Path = typer.Option(Path("attacks-out"), help="Directory for the PNGs."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Craft adversarial examples (APGD-CE) and save them as PNG with a before/after picture each."""
    from simclip_bench.gallery import AttackRequest, run_attack_gallery

    request = AttackRequest(model=model, images=list(image or []), n_images=n_images, eps=_eps_list([eps])[0],
                            n_iter=iterations, seed=seed, out=out, device=device)
    for item in run_attack_gallery(request):
        truth = f" [true: {item.true_label}]" if item.true_label else ""
        stdout.print(f"{item.name}{truth}: {item.clean_label} ({item.clean_prob:.0%}) -> {item.adv_label} "
                  f"({item.adv_prob:.0%})  max |δ| {item.max_perturbation * 255:.2f}/255  {item.panel_path}")


@app.command(name="pretrain-builtin", epilog="""[bold]Example[/bold]\n
  simclip pretrain-builtin --out /tmp/tiny.safetensors  # regenerate the shipped weights elsewhere""")
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
    summary = pretrain_builtin(cfg, log=console.print)
    stdout.print(f"wrote {cfg.out}: val zero-shot accuracy {summary['val_zero_shot_accuracy']:.1%}")


def main() -> None:
    app()
