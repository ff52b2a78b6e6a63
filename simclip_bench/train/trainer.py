"""Adversarial fine-tuning of a CLIP vision encoder (Sim-CLIP and its variants).

Each step: the encoder goes to eval mode, PGD crafts ``x_adv`` maximising the objective's attack
loss (l-inf, 10 steps of 1/255, uniform random start); the encoder goes back to train mode and
the objective's loss is minimised with AdamW under linear warm-up and a cosine schedule.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from simclip_bench.attacks.pgd import pgd_linf
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast, resolve_device
from simclip_bench.eps import parse_eps
from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text, save_encoder
from simclip_bench.models.spec import RUN_CONFIG, load_model
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.tasks.zeroshot_head import zero_shot_accuracy
from simclip_bench.train.objectives import CosineDistanceObjective, get_objective
from simclip_bench.train.recipes import recipe_for
from simclip_bench.train.schedule import warmup_cosine

METRICS_FILE = "metrics.jsonl"
DEFAULT_OBJECTIVE = "simclip-anchored"
DEFAULT_RUNS_DIR = Path("runs")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved, resolved, as ``config.json`` in the run directory.

    Units: ``eps`` and ``attack_step_size`` are pixel units written as ``k/255`` or decimals;
    ``lr`` is AdamW's peak learning rate; ``steps`` and ``warmup_steps`` count optimizer steps.
    Options left as None come from the model's recipe: :func:`simclip_bench.train.recipes.recipe_for`.
    """

    model: str = "tiny-clip"
    objective: str = DEFAULT_OBJECTIVE
    eps: str = "4/255"
    attack_steps: int = 10
    attack_step_size: str = "1/255"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    seed: int = 0
    train_size: int = 20000
    device: str = "auto"
    out: str | None = None
    log_every: int = 10
    extra: dict = field(default_factory=dict)

    def resolve_defaults(self) -> TrainConfig:
        """Fill the options left as None from the model's recipe (see :mod:`simclip_bench.train.recipes`)."""
        recipe = recipe_for(self.model)
        for name in ("steps", "batch_size", "lr", "weight_decay", "warmup_steps"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(recipe, name))
        self.extra.setdefault("recipe", recipe.name)
        return self

    def validate(self) -> None:
        self.resolve_defaults()
        for name in ("steps", "batch_size", "attack_steps", "train_size", "log_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise UserError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.batch_size > self.train_size:
            raise UserError(f"--batch-size {self.batch_size} exceeds the {self.train_size} training images")
        for name in ("eps", "attack_step_size"):
            try:
                parse_eps(getattr(self, name))
            except ValueError as e:
                raise UserError(f"--{name.replace('_', '-')}: {e}") from None
        get_objective(self.objective)
        resolve_device(self.device)


def embedding_spread(z: torch.Tensor) -> float:
    """Per-dimension std of the L2-normalised embeddings times sqrt(d), averaged over dimensions.

    About 1 for embeddings spread over the sphere; it falls towards 0 as they collapse to a point.
    """
    zn = F.normalize(z.detach().float(), dim=-1)
    return float(zn.std(dim=0).mean() * math.sqrt(zn.shape[-1]))


def latest_run(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently finished run directory under ``runs_dir`` (one holding an encoder), or None."""
    runs = [p.parent for p in Path(runs_dir).glob(f"*/{ENCODER_FILENAME}")]
    return max(runs, key=lambda p: (p / ENCODER_FILENAME).stat().st_mtime) if runs else None


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        out = Path(cfg.out)
        if (out / ENCODER_FILENAME).exists():
            raise UserError(f"{out} already holds a finished run; choose another --out")
        return out
    return DEFAULT_RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.objective}"


def train(cfg: TrainConfig, progress: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = print) -> Path:
    """Run adversarial fine-tuning; return the run directory (encoder.safetensors, config.json, metrics.jsonl)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    objective = get_objective(cfg.objective)
    eps = parse_eps(cfg.eps).value
    step_size = parse_eps(cfg.attack_step_size).value
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    loaded = load_model(cfg.model, device)
    model = loaded.model
    encoder = model.encoder
    original = copy.deepcopy(encoder).eval() if objective.needs_original else None
    for p in encoder.parameters():
        p.requires_grad_(True)
    train_data = ShapesDataset("train", seed=cfg.seed, size=cfg.train_size, image_size=model.image_size)
    val_data = ShapesDataset("val", seed=cfg.seed, image_size=model.image_size)
    images, _ = train_data.arrays()

    run_dir = _new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {**asdict(cfg), "out": str(run_dir), "device": str(device), "run_id": new_run_id(),
                "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
                "base_model": loaded.spec, "base_checkpoint_hash": loaded.checkpoint_hash, "arch": loaded.arch,
                "eps_value": eps, "attack_step_size_value": step_size, "data": "shapes/train"}
    atomic_write_text(run_dir / RUN_CONFIG, json.dumps(resolved, indent=2))

    params = [p for p in encoder.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    zs_before = zero_shot_accuracy(model, val_data)
    log(f"base {loaded.spec}: val zero-shot accuracy {zs_before:.1%}")
    metrics_lines: list[str] = []
    start = time.time()
    for step in range(cfg.steps):
        lr = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(len(train_data), size=cfg.batch_size, replace=False)
        x = torch.from_numpy(images[idx]).to(device).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

        encoder.eval()  # the inner maximisation runs in eval mode, as in the papers
        with autocast(device):
            target = objective.attack_target(encoder, original, x)
            x_adv = pgd_linf(CosineDistanceObjective(encoder, target), x, eps, n_iter=cfg.attack_steps,
                             step_size=step_size, generator=gen).x_adv
        encoder.train()
        with autocast(device):
            loss, report = objective.loss(encoder, x, x_adv, target)
        if not torch.isfinite(loss):
            raise UserError(f"training diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            with torch.no_grad():
                spread = embedding_spread(encoder(x))
            elapsed = time.time() - start
            record = {"step": step + 1, "loss": round(report.loss, 5),
                      "cos_adv_target": round(report.cos_adv_target, 5),
                      "embedding_std_sqrt_d": round(spread, 4), "lr": lr,
                      "images_per_s": round((step + 1) * cfg.batch_size / elapsed, 1), "seconds": round(elapsed, 1)}
            metrics_lines.append(json.dumps(record))
            atomic_write_text(run_dir / "metrics.jsonl", "\n".join(metrics_lines) + "\n")
            if progress:
                progress(step + 1, record)
    encoder.eval()
    zs_after = zero_shot_accuracy(model, val_data)
    summary = {"step": cfg.steps, "val_zero_shot_before": zs_before, "val_zero_shot_after": zs_after,
               "seconds": round(time.time() - start, 1)}
    metrics_lines.append(json.dumps(summary))
    atomic_write_text(run_dir / METRICS_FILE, "\n".join(metrics_lines) + "\n")
    save_encoder(encoder.visual, run_dir / ENCODER_FILENAME, base_model=loaded.spec, arch=loaded.arch,
                 extra={"objective": cfg.objective, "eps": cfg.eps, "steps": cfg.steps})
    log(f"val zero-shot accuracy {zs_before:.1%} -> {zs_after:.1%}; run saved to {run_dir}")
    return run_dir
