"""``simclip train``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, progress_bar, say, stdout, unsafe_pickle_option, warn_unsafe_pickle
from simclip_bench.cli.config_file import config_option
from simclip_bench.cli.out_dirs import check_out_dir
from simclip_bench.cli.threads import apply_threads, threads_option
from simclip_bench.errors import UserError

RESUME_OPTIONS = {"resume", "stop_after", "device", "ctx", "log", "allow_unsafe_pickle", "threads"}


def _on_error(on_error: str | None, strict: bool) -> str:
    """``--on-error``, with ``--strict`` as another way to write ``--on-error fail``."""
    from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FAIL, check_on_error

    if strict and on_error not in (None, FAIL):
        raise UserError(f"--strict means --on-error fail, which contradicts --on-error {on_error}; drop one of them")
    return FAIL if strict else check_on_error(on_error or DEFAULT_ON_ERROR)


@app.command(epilog="""[bold]Examples[/bold]

  simclip train                   # Sim-CLIP on the built-in tiny CLIP (minutes)
  simclip train --objective fare  # also tecoa, simclip, simclip-anchored
  simclip train --objective simclip --anchor-weight 0.5 --predictor
  simclip train --steps 100 --threads 1     # one torch thread: a shared machine
  simclip train --resume runs/fare4         # continue after a kill, exactly
  simclip train --config run.toml --steps 100   # a file's options; flags win
  simclip train --log tensorboard           # needs: pip install tensorboard
  # the former inner attack (with --attack-loss cosine for simclip-anchored)
  simclip train --attack-momentum 0 --attack-start ball-clipped
  # ViT-L-14 on ImageNet, one GPU; then 8 GPUs with DDP
  simclip train --model ViT-L-14:openai --dry-run --plan-device h100  # cost
  simclip train --model ViT-L-14:openai --data /data/imagenet --device cuda
  torchrun --nproc_per_node 8 -m simclip_bench train --data /data/imagenet""")
def train(
    ctx: typer.Context,
    config: Path = config_option(),
    model: str = typer.Option("tiny-clip", help="Model spec to fine-tune (built-in name, ARCH:TAG, hf-hub:..., path)."),
    objective: str = typer.Option(
        None, help="simclip (paper), simclip-anchored (released code), fare or tecoa. Default: simclip-anchored."),
    anchor_weight: float = typer.Option(0.0, help="simclip only: add λ·(−cos to the frozen original) to the loss."),
    predictor: bool = typer.Option(False, help="simclip only: SimSiam predictor head (dropped at export)."),
    eps: str = typer.Option("4/255", help="l-inf radius of the training attack, pixel units (4/255 or 0.0157)."),
    steps: int = typer.Option(None, help="Optimizer steps. Default: 250 built-in, 20000 otherwise (RobustVLM)."),
    batch_size: int = typer.Option(None, help="Global images per step (all processes, all micro-batches). "
                                              "Default: 64 built-in, 128 otherwise."),
    lr: float = typer.Option(None, help="Peak AdamW learning rate. Default: 1e-3 built-in, 1e-5 otherwise."),
    weight_decay: float = typer.Option(None, help="AdamW weight decay. Default: 1e-4."),
    warmup_steps: int = typer.Option(None, help="Linear warm-up steps. Default: 25 built-in, 1400 otherwise."),
    attack_steps: int = typer.Option(10, help="PGD steps of the inner maximisation."),
    attack_momentum: float = typer.Option(
        0.9, help="Momentum of the inner PGD's normalised velocity, in [0, 1) (RobustVLM: 0.9; 0: plain sign steps)."),
    attack_loss: str = typer.Option(
        None, help="What the inner PGD maximises: l2 (squared distance to the original embedding) or cosine for "
                   "simclip-anchored and fare; cosine for simclip; ce for tecoa. Default: the reference's choice "
                   "(l2, l2, cosine, ce)."),
    attack_start: str = typer.Option(
        "ball", help="Start of the inner PGD: ball (x + uniform noise in the eps-ball, as RobustVLM) or ball-clipped "
                     "(the same clipped to [0,1])."),
    seed: int = typer.Option(0, help="Seed for data order, attack starts and init."),
    data: str = typer.Option("shapes", help="shapes | ImageFolder dir | list.csv / .jsonl | shards.tar / wds:PATTERN."),
    train_size: int = typer.Option(20000, help="Generated training images (--data shapes)."),
    class_names: Path = typer.Option(None, help="File of class names, one per line in label order (e.g. ImageNet)."),
    probe_size: int = typer.Option(1000, help="Held-out images of the zero-shot probe (0: no probe)."),
    probe_every: int = typer.Option(None, help="Steps between zero-shot probes. Default: a tenth of the run."),
    accum_steps: int = typer.Option(1, help="Gradient accumulation: micro-batches per optimizer step."),
    precision: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16."),
    grad_checkpointing: bool = typer.Option(False, help="open_clip gradient checkpointing (less memory, more time)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the encoder."),
    workers: int = typer.Option(None, help="Data-loading workers. Default: 0 for shapes, 4 for files."),
    on_error: str = typer.Option(
        None, help="An unreadable image: skip (default: count it in metrics.jsonl and go on) or fail (stop at the "
                   "first)."),
    strict: bool = typer.Option(False, help="Same as --on-error fail."),
    save_every: int = typer.Option(None, help="Steps between checkpoints. Default: a tenth of the run."),
    collapse_warn: float = typer.Option(0.5, help="Warn when the embedding spread falls below this share of its start"),
    collapse_stop: float = typer.Option(0.2, help="Stop when it falls below this share (0: never stop)."),
    log_every: int = typer.Option(10, help="Steps between metrics lines."),
    out: Path = typer.Option(None, help="Run directory (default runs/<time>-<objective>)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N (under torchrun: each process its own GPU)."),
    resume: Path = typer.Option(None, help="Continue the run in this directory from its last checkpoint."),
    stop_after: int = typer.Option(None, help="Leave after this many steps of this session (resume later)."),
    log: str = typer.Option("none", help="Also log metrics to: none | tensorboard | wandb (optional packages)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the cost plan (gradient evaluations, FLOPs, memory, predicted time) and stop; "
                                 "nothing is loaded or downloaded."),
    plan_device: str = typer.Option(
        None, help="With --dry-run: the device to predict the time on: h100, a100, h200 or cpu. Default: the run's."),
    allow_unsafe_pickle: bool = unsafe_pickle_option(),
    threads: int = threads_option(),
) -> None:
    """Adversarially fine-tune a CLIP vision encoder (Sim-CLIP, FARE, TeCoA); writes a run directory."""
    warn_unsafe_pickle(allow_unsafe_pickle)
    apply_threads(threads)
    if plan_device is not None and not dry_run:
        raise UserError("--plan-device applies to --dry-run; add --dry-run")
    check_out_dir(resume or out or "runs", "--resume" if resume else "--out")  # default: runs/<time>-<objective>
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.loop import resume as resume_training
    from simclip_bench.train.loop import train as run_training
    from simclip_bench.train.tracking import open_tracker

    tracker = None
    with progress_bar() as bar:
        task = None
        total: int | None = None  # the bar appears with the first finished step: setup errors print one line

        def on_progress(step: int, record: dict) -> None:
            nonlocal task
            info = (f"loss {record['loss']:+.3f} std√d {record['embedding_std_sqrt_d']:.2f} "
                    f"{record['images_per_s']:.0f} img/s")
            if "probe_zero_shot" in record:  # clean held-out accuracy, where this step probed it
                info += f" zero-shot {record['probe_zero_shot']:.1%}"
            if task is None:
                task = bar.add_task("train", total=total, info="", unit="steps")
            bar.update(task, completed=step, info=info)
            if tracker is not None:
                tracker.log(step, record)

        if resume is not None:
            given = sorted(name for name in ctx.params if name not in RESUME_OPTIONS
                           and ctx.get_parameter_source(name).name == "COMMANDLINE")
            if given:
                flag = given[0].replace("_", "-")
                raise UserError(f"--resume continues a run with its saved settings; drop --{flag} "
                                "(only --device, --stop-after, --threads and --allow-unsafe-pickle go with --resume)")
            explicit_device = ctx.get_parameter_source("device").name == "COMMANDLINE"
            from simclip_bench.runs import run_config

            total = run_config(resume).get("steps")  # the bar counts to the run's saved total
            tracker = open_tracker(log, resume, {"resume": str(resume)})
            try:
                run_dir = resume_training(resume, progress=on_progress, log=say, stop_after=stop_after,
                                          device=device if explicit_device else None,
                                          allow_unsafe_pickle=allow_unsafe_pickle)
            finally:
                if tracker is not None:
                    tracker.close()
        else:
            cfg = TrainConfig(model=model, eps=eps, attack_steps=attack_steps, attack_momentum=attack_momentum,
                              attack_loss=attack_loss, attack_start=attack_start, seed=seed, device=device,
                              train_size=train_size, out=str(out) if out else None, anchor_weight=anchor_weight,
                              predictor=predictor, data=data, class_names=str(class_names) if class_names else None,
                              probe_size=probe_size, accum_steps=accum_steps, precision=precision,
                              grad_checkpointing=grad_checkpointing, compile=compile,
                              on_error=_on_error(on_error, strict),
                              collapse_warn=collapse_warn, collapse_stop=collapse_stop, log_every=log_every,
                              allow_unsafe_pickle=allow_unsafe_pickle)
            for name, value in (("objective", objective), ("steps", steps), ("batch_size", batch_size), ("lr", lr),
                                ("warmup_steps", warmup_steps), ("weight_decay", weight_decay),
                                ("probe_every", probe_every), ("workers", workers), ("save_every", save_every)):
                if value is not None:
                    setattr(cfg, name, value)
            cfg.validate()
            if dry_run:
                from simclip_bench.jobs.plan import plan_train_config
                from simclip_bench.plan.cost_plan import render

                for line in render(plan_train_config(cfg, plan_device)):
                    stdout.print(line, markup=False, highlight=False, soft_wrap=True)
                return
            if config is not None:
                cfg.extra["config_file"] = str(config)  # the resolved values are all in config.json
            if log != "none" and cfg.out is None:
                from simclip_bench.runs import new_run_dir

                # the tracker writes into the run directory from the start
                cfg.out = str(new_run_dir(cfg.out, cfg.objective))
            tracker = open_tracker(log, Path(cfg.out or "."), dict(vars(cfg)))
            total = cfg.steps
            try:
                run_dir = run_training(cfg, progress=on_progress, log=say, stop_after=stop_after)
            finally:
                if tracker is not None:
                    tracker.close()
    stdout.print(str(run_dir), markup=False, highlight=False)
