"""The cost plan of ``simclip train``, made from its config alone: no model, weights or image is loaded.

Per optimizer step, each of the global batch's images costs the objective's passes (:mod:`.train_budget`): the
inner PGD's gradient evaluations, the extra forward passes, the training forward and backward; the held-out
zero-shot probe adds its forward passes every ``probe_every`` steps. Nothing stops early in training, so the count
is exact, not only a bound. Memory: the trained tower's weights, gradients and AdamW's two moments (16 bytes per
parameter), the frozen original where the objective keeps one, the text tower, and per image of a micro-batch the
activations its training passes save for backward (counted on the meta device in float32; without gradient
checkpointing).
"""
from __future__ import annotations

from simclip_bench.data.sources import SHAPES
from simclip_bench.plan.architecture import planned_architecture
from simclip_bench.plan.cost_plan import CostPlan, MemoryEstimate, PlanRow
from simclip_bench.plan.datasets import shapes_render_seconds
from simclip_bench.plan.devices import PlanDevice
from simclip_bench.plan.eval_plan import BF16_ACTIVATIONS
from simclip_bench.plan.model_cost import model_cost
from simclip_bench.plan.train_budget import objective_passes
from simclip_bench.train.config import TrainConfig

ADAMW_BYTES = 16  # float32 weight, gradient and AdamW's two moments, per trained parameter


def plan_train(cfg: TrainConfig, device: PlanDevice, world_size: int = 1) -> CostPlan:
    """The plan of the training run ``cfg`` (validated, defaults resolved) on ``device`` x ``world_size``."""
    cfg.validate()
    arch = planned_architecture(cfg.model)
    cost = model_cost(arch.config)
    budget = objective_passes(cfg.objective, cfg.anchor_weight, cfg.predictor, cfg.attack_loss, cfg.attack_steps)
    precision = ("fp32" if device.name == "cpu" else "bf16") if cfg.precision == "auto" else cfg.precision
    images = cfg.steps * cfg.batch_size
    grads = images * budget.grad_evals
    forwards = images * budget.view_forwards
    flops = images * (budget.pgd_grad_evals * cost.grad_flops + budget.view_forwards * cost.forward_flops
                      + budget.train_passes * cost.train_flops)
    micro = cfg.batch_size // (cfg.accum_steps * world_size)
    calls_per_micro = budget.pgd_grad_evals + (1 if budget.view_forwards else 0) + 1
    calls = cfg.steps * (cfg.accum_steps * calls_per_micro + 1)
    probes = (cfg.steps // cfg.probe_every + 2) if cfg.probe_size else 0
    probe_flops = probes * cfg.probe_size * cost.forward_flops
    seconds = (device.seconds(flops / world_size, calls, precision)
               + device.seconds(probe_flops, probes * max(1, cfg.probe_size // 500), "fp32"))
    what = (f"{cfg.objective}, PGD-{cfg.attack_steps}: {budget.pgd_grad_evals} + {budget.train_passes:g} training "
            f"+ {budget.view_forwards:g} forward per image")
    row = PlanRow(cfg.model, arch.config, cfg.data, images, what, budget.grad_evals, grads, forwards + probes *
                  cfg.probe_size, flops + probe_flops, seconds,
                  f"{cfg.steps} steps x {cfg.batch_size} images ({cfg.accum_steps} micro-batch(es) of {micro} per "
                  f"process, {world_size} process(es)); probe: {cfg.probe_size} images, {probes} times")
    scale = BF16_ACTIVATIONS if precision == "bf16" else 1.0
    text_params = cost.total_params - cost.vision_params
    fixed = ADAMW_BYTES * cost.vision_params + 4 * text_params + (4 * cost.vision_params if budget.needs_original
                                                                  else 0)
    memory = MemoryEstimate(budget.train_passes * cost.train_bytes * scale, fixed,
                            "computed: AdamW state of the tower, the frozen original, the text tower, and the "
                            "activations a training pass saves (meta device, float32"
                            + (", halved for bf16, assumed)" if scale != 1 else ")"))
    setup = device.setup_seconds + device.load_seconds(cost.weight_bytes)
    if cfg.data == SHAPES:  # the generated training and probe images are rendered once, at the first step
        setup += shapes_render_seconds(cfg.train_size + cfg.probe_size, cost.image_size)
    return CostPlan("train", device, precision, micro, [row], memory, setup,
                    [f"a step of {cfg.batch_size} images: {cfg.batch_size * budget.grad_evals:,.0f} gradient "
                     "evaluations; the count is exact (training never stops early)"])
