"""Adversarial fine-tuning of a CLIP vision encoder (Sim-CLIP, FARE, TeCoA), from a laptop to several GPUs.

Each optimizer step takes a global batch (``batch_size`` images) split over ``accum_steps`` micro-batches
and the DDP processes. Per micro-batch: the encoder goes to eval mode and PGD crafts ``x_adv`` maximising
the objective's attack loss (l-inf, 10 steps of 1/255 with momentum 0.9 on the normalised velocity,
uniform random start: RobustVLM's ``pgd_train.py``, :mod:`.inner_attack`); the encoder goes back to train
mode and the objective's loss is back-propagated. AdamW under linear warm-up and a cosine schedule.
bf16 autocast on CUDA (``--precision``), open_clip's gradient checkpointing and ``torch.compile`` are
opt-in. A checkpoint every ``save_every`` steps and at the end makes ``--resume`` exact. A NaN or Inf loss
or gradient stops the run before the step is applied, the last checkpoint intact (:mod:`.divergence`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.data.sources import SHAPES, open_probe_data, open_train_data
from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FAIL, check_on_error, unreadable_error
from simclip_bench.devices import resolve_device
from simclip_bench.eps import parse_eps
from simclip_bench.errors import UserError, check_count, did_you_mean
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text, save_encoder, state_dict_sha256
from simclip_bench.models.spec import RUN_CONFIG, load_model, run_config
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.train import distributed as ddp
from simclip_bench.train.batches import MapBatches, Split, StreamBatches
from simclip_bench.train.checkpointing import (
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from simclip_bench.train.collapse import CollapseWatch, embedding_spread
from simclip_bench.train.divergence import TrainingDiverged, check_finite
from simclip_bench.train.inner_attack import DEFAULT_MOMENTUM, check_momentum, training_pgd
from simclip_bench.train.objectives import OBJECTIVES, default_attack_loss, former_attack_loss, get_objective
from simclip_bench.train.probe import REAL_DATA_TEMPLATES, ZeroShotProbe
from simclip_bench.train.recipes import recipe_for
from simclip_bench.train.schedule import warmup_cosine

METRICS_FILE = "metrics.jsonl"
DEFAULT_OBJECTIVE = "simclip-anchored"
DEFAULT_RUNS_DIR = Path("runs")
PRECISIONS = ("auto", "fp32", "bf16")
# Where the inner PGD starts: ``ball`` is x + U(-eps, eps) as the reference draws it, ``ball-clipped``
# the same clipped to [0,1] (what runs saved before ``attack_start`` existed used).
ATTACK_STARTS = ("ball", "ball-clipped")

__all__ = ["DEFAULT_OBJECTIVE", "DEFAULT_RUNS_DIR", "METRICS_FILE", "TrainConfig", "TrainSession", "TrainingDiverged",
           "embedding_spread", "latest_run", "resume", "train"]


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved, resolved, as ``config.json`` in the run directory.

    Units: ``eps`` and ``attack_step_size`` are pixel units written as ``k/255`` or decimals; ``lr`` is
    AdamW's peak learning rate; ``steps``, ``warmup_steps``, ``save_every``, ``probe_every`` and
    ``log_every`` count optimizer steps; ``batch_size`` is the global batch (all micro-batches, all
    processes). Options left as None come from the model's recipe (:func:`simclip_bench.train.recipes.recipe_for`)
    or, for ``save_every`` / ``probe_every``, a tenth of the run. ``on_error``: ``skip`` (default) counts
    and skips unreadable images, ``fail`` stops at the first (``--on-error fail`` or ``--strict``).
    ``allow_unsafe_pickle`` (default False) lets a pickled base model load with the full unpickler (see
    :func:`~simclip_bench.models.spec.load_model`); it is recorded, but a resume asks for it again.
    The inner PGD (:mod:`simclip_bench.train.inner_attack`): ``attack_momentum`` in [0, 1) (0.9 as in
    RobustVLM; 0 is plain sign steps); ``attack_loss`` what it maximises (None: the objective's reference
    choice, see :mod:`simclip_bench.train.objectives`); ``attack_start`` one of :data:`ATTACK_STARTS`.
    """

    model: str = "tiny-clip"
    objective: str = DEFAULT_OBJECTIVE
    anchor_weight: float = 0.0
    predictor: bool = False
    eps: str = "4/255"
    attack_steps: int = 10
    attack_step_size: str = "1/255"
    attack_momentum: float = DEFAULT_MOMENTUM
    attack_loss: str | None = None
    attack_start: str = "ball"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    seed: int = 0
    data: str = SHAPES
    train_size: int = 20000
    class_names: str | None = None
    probe_size: int = 1000
    probe_every: int | None = None
    accum_steps: int = 1
    precision: str = "auto"
    grad_checkpointing: bool = False
    compile: bool = False
    workers: int | None = None
    on_error: str = DEFAULT_ON_ERROR
    save_every: int | None = None
    collapse_warn: float = 0.5
    collapse_stop: float = 0.2
    device: str = "auto"
    out: str | None = None
    log_every: int = 10
    allow_unsafe_pickle: bool = False
    extra: dict = field(default_factory=dict)

    def resolve_defaults(self) -> TrainConfig:
        """Fill the options left as None from the model's recipe (see :mod:`simclip_bench.train.recipes`)."""
        recipe = recipe_for(self.model, self.objective)
        for name in ("steps", "batch_size", "lr", "weight_decay", "warmup_steps"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(recipe, name))
        self.extra.setdefault("recipe", recipe.name)
        if self.attack_loss is None and self.objective in OBJECTIVES:  # an unknown name is validate()'s to report
            self.attack_loss = default_attack_loss(self.objective)
        if self.save_every is None:
            self.save_every = max(self.steps // 10, 1)
        if self.probe_every is None:
            self.probe_every = max(self.steps // 10, 1)
        if self.workers is None:
            self.workers = 0 if self.data == SHAPES else 4
        return self

    def validate(self) -> None:
        self.resolve_defaults()
        for name in ("steps", "batch_size", "attack_steps", "train_size", "log_every", "accum_steps", "save_every",
                     "probe_every"):
            check_count(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("warmup_steps", "workers", "probe_size", "seed"):
            check_count(f"--{name.replace('_', '-')}", getattr(self, name), minimum=0)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.data == SHAPES and self.batch_size > self.train_size:
            raise UserError(f"--batch-size {self.batch_size} exceeds the {self.train_size} training images")
        if self.class_names and not Path(self.class_names).is_file():
            raise UserError(f"--class-names {self.class_names}: no such file; give a text file with one class name "
                            "per line, in label order")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (0 <= self.collapse_stop <= self.collapse_warn <= 1):
            raise UserError(f"need 0 <= --collapse-stop ({self.collapse_stop}) <= --collapse-warn "
                            f"({self.collapse_warn}) <= 1")
        for name in ("eps", "attack_step_size"):
            try:
                parse_eps(getattr(self, name))
            except ValueError as e:
                raise UserError(f"--{name.replace('_', '-')}: {e}") from None
        try:
            check_momentum(self.attack_momentum)
        except ValueError as e:
            raise UserError(f"--attack-momentum {e}") from None
        if self.attack_start not in ATTACK_STARTS:
            raise UserError(f"--attack-start must be {' or '.join(ATTACK_STARTS)}, got {self.attack_start!r}"
                            f"{did_you_mean(self.attack_start, ATTACK_STARTS)}")
        check_on_error(self.on_error)
        get_objective(self.objective, self.anchor_weight, self.predictor, self.attack_loss)
        resolve_device(self.device)
        Split(self.batch_size, self.accum_steps, int(os.environ.get("WORLD_SIZE", "1"))).validate()


def latest_run(runs_dir: Path = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently finished run directory under ``runs_dir`` (one holding an encoder), or None."""
    runs = [p.parent for p in Path(runs_dir).glob(f"*/{ENCODER_FILENAME}")]
    return max(runs, key=lambda p: (p / ENCODER_FILENAME).stat().st_mtime) if runs else None


class TrainNet(nn.Module):
    """The trainable part: the vision tower (in pixel space) and the objective's optional predictor head."""

    def __init__(self, encoder: nn.Module, predictor: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.encoder(x)
        return z, (self.predictor(z.float()) if self.predictor is not None else None)


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    return ("bf16" if device.type == "cuda" else "fp32") if cfg.precision == "auto" else cfg.precision


class TrainSession:
    """One process's share of a run: model, optimizer, data, probe, collapse watch; :meth:`step` trains one step."""

    def __init__(self, cfg: TrainConfig, dist: ddp.DistInfo | None = None, log: Callable[[str], None] = print) -> None:
        cfg.validate()
        self.cfg, self.log = cfg, log
        self.dist = dist or ddp.DistInfo()
        self.device = ddp.device_for_rank(resolve_device(cfg.device), self.dist)
        self.precision = _precision(cfg, self.device)
        self.objective = get_objective(cfg.objective, cfg.anchor_weight, cfg.predictor, cfg.attack_loss)
        self.eps = parse_eps(cfg.eps).value
        self.step_size = parse_eps(cfg.attack_step_size).value
        torch.manual_seed(cfg.seed)

        self.loaded = load_model(cfg.model, self.device, cfg.allow_unsafe_pickle)
        self.model = self.loaded.model
        self.encoder = self.model.encoder
        self.original = copy.deepcopy(self.encoder).eval() if self.objective.needs_original else None
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        if cfg.grad_checkpointing:
            self.model.clip.visual.set_grad_checkpointing(True)
        with torch.no_grad():
            blank = torch.zeros(1, 3, self.model.image_size, self.model.image_size, device=self.device)
            embed_dim = int(self.encoder(blank).shape[-1])
        predictor = self.objective.predictor(embed_dim)
        self.net = TrainNet(self.encoder, predictor.to(self.device) if predictor is not None else None)

        transform = pixel_transform(getattr(self.model.clip.visual, "preprocess_cfg", None)
                                    or {"size": self.model.image_size})
        self.data = open_train_data(cfg.data, transform, self.model.image_size, cfg.seed, cfg.train_size,
                                    cfg.class_names)
        if self.objective.needs_labels:
            self.objective.setup(self.model.encode_text, self.data.classnames)
        self.split = Split(cfg.batch_size, cfg.accum_steps, self.dist.world_size, self.dist.rank)
        self.split.validate()
        self.batches = self._batches(None)
        self.probe = self._probe(transform)

        params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                                      {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.lr)
        self.ddp_net = (DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                                else None) if self.dist.enabled else None)
        forward = self.ddp_net or self.net
        self.forward = torch.compile(forward) if cfg.compile else forward
        self.attack_encoder = torch.compile(self.encoder) if cfg.compile else self.encoder
        self.watch = CollapseWatch(cfg.collapse_warn, cfg.collapse_stop,
                                   chance=self.probe.chance if self.probe else None)
        self.step_count = 0
        self.unreadable = 0
        self.zero_shot_before: float | None = None

    def _batches(self, state: dict | None):
        if self.data.kind == "webdataset":
            return StreamBatches(self.data.source, self.split, state, self.cfg.workers)
        return MapBatches(self.data.source, self.split, self.cfg.seed, state, self.cfg.workers)

    def _probe(self, transform) -> ZeroShotProbe | None:
        if self.cfg.probe_size == 0 or not self.data.classnames:
            return None
        held_out = open_probe_data(self.cfg.data, transform, self.model.image_size, self.cfg.seed,
                                   self.cfg.probe_size, self.data.classnames, self.cfg.on_error)
        if held_out is None:
            return None
        templates = ShapesDataset.templates if self.cfg.data == SHAPES else REAL_DATA_TEMPLATES
        return ZeroShotProbe(self.model, *held_out, self.data.classnames, templates)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def probe_accuracy(self) -> float | None:
        return self.probe.accuracy(self.autocast) if self.probe else None

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, self.cfg.steps, self.cfg.warmup_steps, self.cfg.lr)

    def step(self) -> dict:
        """One optimizer step over the global batch; returns this process's report (loss etc.).

        Raises :class:`TrainingDiverged`, without applying the step, when a loss or a gradient is NaN or Inf.
        """
        cfg, step = self.cfg, self.step_count
        lr = self.lr_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        micro_batches = self.batches.next_step()
        self.opt.zero_grad(set_to_none=True)
        reports: list[dict] = []
        losses: list[torch.Tensor] = []
        for m, mb in enumerate(micro_batches):
            if mb.errors:
                if cfg.on_error == FAIL:
                    raise unreadable_error("training image", mb.errors[0])
                self.unreadable += len(mb.errors)
            x = mb.x.to(self.device, non_blocking=True)
            labels = mb.labels.to(self.device, non_blocking=True)
            first = self.split.slice(m).start
            positions = torch.arange(first, first + len(x))
            self.net.eval()  # the inner maximisation runs in eval mode, as in the papers
            with self.autocast():
                views = self.objective.views(self.encoder, self.original, x, labels)
                encoder = self.attack_encoder

                def attack(x_adv, idx, views=views, encoder=encoder):
                    loss = self.objective.attack_loss(encoder(x_adv), views, idx)
                    return loss, torch.zeros_like(loss, dtype=torch.bool)

                x_adv = training_pgd(attack, x, self.eps, cfg.attack_steps, self.step_size, cfg.seed, step, positions,
                                     momentum=cfg.attack_momentum, clip_start=cfg.attack_start == "ball-clipped")
            self.net.train()
            last = m == len(micro_batches) - 1
            sync = self.ddp_net.no_sync() if (self.ddp_net is not None and not last) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    z, p = self.forward(self.objective.loss_inputs(x, x_adv))
                    loss, report = self.objective.loss(z, p, views)
                # backward even on a NaN loss: under DDP every process must reach the gradient all-reduce
                (loss / len(micro_batches)).backward()
            losses.append(loss.detach())
            reports.append(report)
        trained = [param for group in self.opt.param_groups for param in group["params"]]
        check_finite(step + 1, losses, trained, self.dist.enabled)
        self.opt.step()
        self.step_count += 1
        out = {k: sum(r[k] for r in reports) / len(reports) for k in reports[0]}
        out["lr"] = lr
        self._last_x = micro_batches[0].x
        return out

    @torch.no_grad()
    def spread(self) -> float:
        """Embedding spread on this process's first micro-batch of the last step (eval mode)."""
        self.net.eval()
        with self.autocast():
            value = embedding_spread(self.encoder(self._last_x.to(self.device)))
        self.net.train()
        return value

    def state_dict(self) -> dict:
        weights = {k: v.detach().cpu() for k, v in self.encoder.visual.state_dict().items()}
        return {"step": self.step_count, "model": weights,
                "predictor": ({k: v.detach().cpu() for k, v in self.net.predictor.state_dict().items()}
                              if self.net.predictor is not None else {}),
                "optimizer": self.opt.state_dict(), "rng": rng_state(self.device), "data": self.batches.state(),
                "collapse": self.watch.state_dict(), "unreadable": self.unreadable,
                "zero_shot_before": self.zero_shot_before}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.visual.load_state_dict(state["model"])
        if self.net.predictor is not None:
            self.net.predictor.load_state_dict(state["predictor"])
        self.opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.device)
        self.step_count = int(state["step"])
        self.batches = self._batches(state["data"])
        self.watch.load_state_dict(state["collapse"])
        self.unreadable = int(state["unreadable"])
        self.zero_shot_before = state["zero_shot_before"]


# ----------------------------------------------------------------------------------------------- the run


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        out = Path(cfg.out)
        if (out / ENCODER_FILENAME).exists():
            raise UserError(f"{out} already holds a finished run; choose another --out")
        if (out / "checkpoint.pt").exists():
            raise UserError(f"{out} holds an unfinished run; continue it with --resume {out} or choose another --out")
        return out
    return DEFAULT_RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.objective}"


def _config_from_run(run_dir: Path) -> TrainConfig:
    saved = run_config(run_dir)
    if saved.pop("strict", False):  # written before --on-error existed
        saved.setdefault("on_error", FAIL)
    # Written before the inner PGD had momentum, a start outside [0,1] and a choice of loss: resume it
    # with the attack it was trained with (plain sign steps from a clipped start, the former loss).
    saved.setdefault("attack_momentum", 0.0)
    saved.setdefault("attack_start", "ball-clipped")
    objective = saved.get("objective", DEFAULT_OBJECTIVE)
    if "attack_loss" not in saved and objective in OBJECTIVES:
        saved["attack_loss"] = former_attack_loss(objective)
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in names})


def train(cfg: TrainConfig, progress: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = print, stop_after: int | None = None) -> Path:
    """Run adversarial fine-tuning; return the run directory (encoder.safetensors, config.json, metrics.jsonl,
    checkpoint.pt). ``stop_after``: leave after that many steps of this session, with a checkpoint to resume."""
    cfg.validate()
    return _run(cfg, None, progress, log, stop_after)


def resume(run_dir: Path, progress: Callable[[int, dict], None] | None = None, log: Callable[[str], None] = print,
           stop_after: int | None = None, device: str | None = None, allow_unsafe_pickle: bool = False) -> Path:
    """Continue the run in ``run_dir`` from its checkpoint; the result is what an uninterrupted run gives.

    ``allow_unsafe_pickle`` (default False) is never taken from the saved config: the file may have changed
    since, so full unpickling needs the caller's say-so again.
    """
    run_dir = Path(run_dir)
    cfg = _config_from_run(run_dir)
    if (run_dir / ENCODER_FILENAME).exists():
        raise UserError(f"--resume: {run_dir} is already finished ({ENCODER_FILENAME} exists)")
    if device is not None:
        cfg.device = device
    cfg.allow_unsafe_pickle = allow_unsafe_pickle
    cfg.out = str(run_dir)
    cfg.validate()
    return _run(cfg, run_dir, progress, log, stop_after)


def _metrics_lines(run_dir: Path, up_to_step: int) -> list[str]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= up_to_step and "val_zero_shot_after" not in line]


def _run(cfg: TrainConfig, resume_dir: Path | None, progress, log, stop_after: int | None) -> Path:
    if stop_after is not None and stop_after <= 0:
        raise UserError(f"--stop-after must be a positive integer, got {stop_after}")
    dist = ddp.init_distributed(resolve_device(cfg.device))
    try:
        return _run_session(cfg, resume_dir, progress, log if dist.is_main else (lambda *_: None), stop_after, dist)
    finally:
        ddp.shutdown(dist)


def _run_session(cfg, resume_dir, progress, log, stop_after, dist: ddp.DistInfo) -> Path:
    run_dir = resume_dir or Path(ddp.broadcast_object(str(_new_run_dir(cfg)), dist))
    session = TrainSession(cfg, dist, log)
    main = dist.is_main
    if resume_dir is not None:
        if main:
            remove_stale_temporaries(run_dir)  # left by a process killed while writing
        session.load_state_dict(load_checkpoint(run_dir, "cpu"))
        log(f"resuming {run_dir} at step {session.step_count}/{cfg.steps}")
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**asdict(cfg), "out": str(run_dir), "device": str(session.device), "run_id": new_run_id(),
                    "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
                    "base_model": session.loaded.spec, "base_checkpoint_hash": session.loaded.checkpoint_hash,
                    "arch": session.loaded.arch, "eps_value": session.eps, "attack_step_size_value": session.step_size,
                    "data_kind": session.data.kind, "world_size": dist.world_size,
                    "per_rank_micro_batch": session.split.micro, "precision": session.precision}
        atomic_write_text(run_dir / RUN_CONFIG, json.dumps(resolved, indent=2))
    metrics = _metrics_lines(run_dir, session.step_count) if main else []
    saved_step = session.step_count if resume_dir is not None else None  # the step the checkpoint holds

    def save() -> None:
        nonlocal saved_step
        if main:
            save_checkpoint(session.state_dict(), run_dir)
        saved_step = session.step_count

    def write_metrics() -> None:
        if main:
            atomic_write_text(run_dir / METRICS_FILE, "\n".join(metrics) + "\n")

    if session.zero_shot_before is None:
        session.zero_shot_before = session.probe_accuracy()
        if session.zero_shot_before is not None:
            log(f"base {session.loaded.spec}: held-out zero-shot accuracy {session.zero_shot_before:.1%}")
    start, first_step = time.time(), session.step_count
    per_rank_images = 0
    while session.step_count < cfg.steps:
        try:
            report = session.step()
        except TrainingDiverged as e:
            metrics.append(json.dumps({"step": e.step, "stopped": "diverged", "non_finite": e.what}))
            write_metrics()
            raise e.at(run_dir, saved_step) from None
        step = session.step_count
        per_rank_images += cfg.batch_size // dist.world_size
        is_log = step % cfg.log_every == 0 or step == cfg.steps
        is_probe = step % cfg.probe_every == 0 or step == cfg.steps
        if is_log or is_probe:
            keys = sorted(k for k in report if k != "lr")
            values = ddp.mean_over_ranks([report[k] for k in keys] + [session.spread()], session.device, dist)
            record = {"step": step, **{k: round(v, 5) for k, v in zip(keys, values[:-1], strict=True)},
                      "embedding_std_sqrt_d": round(values[-1], 4), "lr": report["lr"]}
            probe = session.probe_accuracy() if is_probe else None
            if probe is not None:
                record["probe_zero_shot"] = round(probe, 4)
            elapsed = time.time() - start
            record.update(images_per_s=round(per_rank_images * dist.world_size / max(elapsed, 1e-9), 1),
                          seconds=round(elapsed, 1),
                          unreadable_images=ddp.sum_over_ranks(session.unreadable, session.device, dist))
            metrics.append(json.dumps(record))
            write_metrics()
            if progress and main:
                progress(step, record)
            try:
                session.watch.check(step, record["embedding_std_sqrt_d"], probe, log)
            except UserError:
                metrics.append(json.dumps({"step": step, "stopped": "collapse"}))
                write_metrics()
                save()
                raise
        if step % cfg.save_every == 0 or step == cfg.steps:
            save()
        if stop_after is not None and step - first_step >= stop_after and step < cfg.steps:
            if step % cfg.save_every != 0:
                save()
            log(f"stopped after {stop_after} steps at step {step}/{cfg.steps}; continue with "
                f"'simclip train --resume {run_dir}'")
            return run_dir
    return _finish(session, run_dir, metrics, write_metrics, log, dist)


def _finish(session: TrainSession, run_dir: Path, metrics: list[str], write_metrics, log, dist) -> Path:
    cfg = session.cfg
    session.net.eval()
    digests = ddp.all_gather_objects(state_dict_sha256(session.encoder.visual.state_dict()), dist)
    after = session.probe_accuracy()
    unreadable = ddp.sum_over_ranks(session.unreadable, session.device, dist)
    summary = {"step": cfg.steps, "val_zero_shot_before": session.zero_shot_before, "val_zero_shot_after": after,
               "unreadable_images": unreadable, "world_size": dist.world_size,
               "ranks_agree": len(set(digests)) == 1}
    metrics.append(json.dumps(summary))
    if dist.is_main:
        write_metrics()
        save_encoder(session.encoder.visual, run_dir / ENCODER_FILENAME, base_model=session.loaded.spec,
                     arch=session.loaded.arch, extra={"objective": cfg.objective, "eps": cfg.eps, "steps": cfg.steps,
                                                      "anchor_weight": cfg.anchor_weight, "data": cfg.data})
    if unreadable:
        log(f"[yellow]{unreadable} unreadable training images were skipped[/yellow] (--on-error fail makes them "
            "fatal)")
    if after is not None:
        log(f"held-out zero-shot accuracy {session.zero_shot_before:.1%} -> {after:.1%}; run saved to {run_dir}")
    else:
        log(f"run saved to {run_dir}")
    return run_dir
