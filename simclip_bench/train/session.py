"""One process's share of a training run: model, optimizer, data, probe; :meth:`TrainSession.step` trains one step.

Each optimizer step takes a global batch (``batch_size`` images) split over ``accum_steps`` micro-batches
and the DDP processes. Per micro-batch: the encoder goes to eval mode and PGD crafts ``x_adv`` maximising
the objective's attack loss (l-inf, 10 steps of 1/255 with momentum 0.9 on the normalised velocity,
uniform random start: RobustVLM's ``pgd_train.py``, :mod:`.inner_attack`); the encoder goes back to train
mode and the objective's loss is back-propagated. AdamW under linear warm-up and a cosine schedule.
bf16 autocast on CUDA (``--precision``), open_clip's gradient checkpointing and ``torch.compile`` are
opt-in. A NaN or Inf loss or gradient raises before the step is applied (:mod:`.divergence`). The whole
state (:meth:`TrainSession.state_dict`) is what a checkpoint holds; the run around it is :mod:`.loop`.

A step that runs out of memory starts again with each micro-batch cut into pieces of half the size, each
piece's loss weighted by its share, so the gradient is the same up to float rounding (more accumulation steps:
every loss is a per-image mean, and each image's PGD start is keyed by its position in the global batch); the
smaller pieces are kept (:mod:`simclip_bench.memory.adaptive_batch`). Under DDP the processes must cut alike, so
there it stops with one line instead.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from simclip_bench.attacks.eps import parse_eps
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.data.sources import SHAPES, open_probe_data, open_train_data
from simclip_bench.data.unreadable import FAIL, unreadable_error
from simclip_bench.devices import resolve_device
from simclip_bench.lr_schedule import warmup_cosine
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.models.spec import load_model
from simclip_bench.train import distributed as ddp
from simclip_bench.train.batches import MapBatches, Split, StreamBatches
from simclip_bench.train.checkpointing import rng_state, set_rng_state
from simclip_bench.train.collapse import CollapseWatch, embedding_spread
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.divergence import check_finite
from simclip_bench.train.inner_attack import training_pgd
from simclip_bench.train.objectives import get_objective
from simclip_bench.train.probe import REAL_DATA_TEMPLATES, ZeroShotProbe


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
        self.memory = AdaptiveBatch(self.split.micro, "training micro-batch", notify=log, fixed=(
            "the processes of a DDP run must cut their micro-batches alike: run again with a higher --accum-steps"
            if self.dist.enabled else None))

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
        step = self.step_count
        lr = self.lr_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        micro_batches = self.batches.next_step()
        reports, losses = self.memory.run(lambda size: self._accumulate(micro_batches, size, step))
        trained = [param for group in self.opt.param_groups for param in group["params"]]
        check_finite(step + 1, losses, trained, self.dist.enabled)
        self.opt.step()
        self.step_count += 1
        if all(w == 1.0 for w, _ in reports):  # whole micro-batches: their plain mean, as always
            out = {k: sum(r[k] for _, r in reports) / len(reports) for k in reports[0][1]}
        else:
            out = {k: sum(w * r[k] for w, r in reports) / len(micro_batches) for k in reports[0][1]}
        out["lr"] = lr
        self._last_x = micro_batches[0].x
        return out

    def _accumulate(self, micro_batches: list, size: int, step: int) -> tuple[list[tuple[float, dict]], list]:
        """The step's gradients into ``.grad`` (from zero), each micro-batch in pieces of at most ``size`` images;
        returns each piece's (share of its micro-batch, report) and each piece's loss."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        reports: list[tuple[float, dict]] = []
        losses: list[torch.Tensor] = []
        unreadable = 0
        for m, mb in enumerate(micro_batches):
            if mb.errors:
                if cfg.on_error == FAIL:
                    raise unreadable_error("training image", mb.errors[0])
                unreadable += len(mb.errors)
            first = self.split.slice(m).start
            for start in range(0, len(mb.x), size):
                x = mb.x[start:start + size].to(self.device, non_blocking=True)
                labels = mb.labels[start:start + size].to(self.device, non_blocking=True)
                share = len(x) / len(mb.x)
                last = m == len(micro_batches) - 1 and start + size >= len(mb.x)
                loss, report = self._piece(x, labels, torch.arange(first + start, first + start + len(x)), step,
                                           share, len(micro_batches), last)
                losses.append(loss)
                reports.append((share, report))
        self.unreadable += unreadable  # once the step went through (an attempt that ran out of memory is redone)
        return reports, losses

    def _piece(self, x: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, step: int, share: float,
               n_micro: int, last: bool) -> tuple[torch.Tensor, dict]:
        """PGD on the images ``x`` (at ``positions`` of the global batch), then the objective's loss, weighted by
        the piece's ``share`` of its micro-batch over the ``n_micro`` micro-batches, back-propagated."""
        cfg = self.cfg
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
        sync = self.ddp_net.no_sync() if (self.ddp_net is not None and not last) else contextlib.nullcontext()
        with sync:
            with self.autocast():
                z, p = self.forward(self.objective.loss_inputs(x, x_adv))
                loss, report = self.objective.loss(z, p, views)
            # backward even on a NaN loss: under DDP every process must reach the gradient all-reduce
            ((loss if share == 1.0 else loss * share) / n_micro).backward()
        return loss.detach(), report

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
