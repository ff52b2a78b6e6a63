"""What defines a ``simclip train`` run: :class:`TrainConfig`, its defaults and its checks before anything loads.

The config is saved, resolved, as the run's ``config.json`` (:mod:`simclip_bench.runs`);
:func:`config_from_run` reads it back for ``--resume``, filling what older runs did not record with what
they were trained with.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from simclip_bench.attacks.eps import parse_eps
from simclip_bench.data.sources import SHAPES
from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FAIL, check_on_error
from simclip_bench.devices import resolve_device
from simclip_bench.errors import UserError, check_count, did_you_mean
from simclip_bench.runs import run_config
from simclip_bench.train.batches import Split
from simclip_bench.train.inner_attack import DEFAULT_MOMENTUM, check_momentum
from simclip_bench.train.objective_names import DEFAULT_OBJECTIVE
from simclip_bench.train.objectives import (
    OBJECTIVES,
    default_attack_loss,
    former_attack_loss,
    get_objective,
)
from simclip_bench.train.recipes import recipe_for

PRECISIONS = ("auto", "fp32", "bf16")
# Where the inner PGD starts: ``ball`` is x + U(-eps, eps) as the reference draws it, ``ball-clipped``
# the same clipped to [0,1] (what runs saved before ``attack_start`` existed used).
ATTACK_STARTS = ("ball", "ball-clipped")


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


def config_from_run(run_dir: Path) -> TrainConfig:
    """The config of the run in ``run_dir``, as saved in its ``config.json`` (for ``--resume``)."""
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
