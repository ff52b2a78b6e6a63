"""The cost plan of ``simclip eval`` (zero-shot), made from the request alone: no model, weights or image is loaded.

Per (model, dataset) cell, as :func:`simclip_bench.tasks.zeroshot.run_cell` will run it: the fixed samples
(``min(n_samples, images)``), the protocol's attack for the dataset's class count at every eps, the fast
protocol's audit (the full attack on ``ceil(fraction x n)`` of them), the text classifier (classes x templates
prompts) and the float32 forward passes (clean predictions, a verdict after every attack run, Square's queries).
FLOPs per image come from :mod:`.model_cost`; the time from :mod:`.devices`.
"""
from __future__ import annotations

import math

from simclip_bench.data.catalog import BUILTIN
from simclip_bench.errors import UserError
from simclip_bench.memory.adaptive_batch import AUTO, parse_batch_size
from simclip_bench.plan.architecture import planned_architecture
from simclip_bench.plan.attack_budget import ensemble_budget, ensemble_passes
from simclip_bench.plan.cost_plan import CostPlan, MemoryEstimate, PlanRow, chunks
from simclip_bench.plan.datasets import dataset_extents, shapes_render_seconds
from simclip_bench.plan.devices import PlanDevice
from simclip_bench.plan.model_cost import ModelCost, model_cost
from simclip_bench.tasks.protocols import Protocol

APGD_STATE_IMAGES = 8  # x, x_adv, x_prev, grad, x_best, grad_best, x_found and the clean copy, per slot
BF16_ACTIVATIONS = 0.5  # bf16 autocast keeps activations in half the bytes (assumed; counted in float32)


def search_precision(precision: str, device: PlanDevice, reference: bool) -> str:
    """The attack search's dtype on the plan's device: ``auto`` is bf16 on a GPU, fp32 on a CPU; the reference
    backend is always fp32."""
    if reference:
        return "fp32"
    if precision == "auto":
        return "fp32" if device.name == "cpu" else "bf16"
    return precision


def working_batch(batch_size: str | int, device: PlanDevice, reference: bool) -> int:
    """``--batch-size`` on the plan's device: ``auto`` starts at 512 on a GPU and at 500 on a CPU (always 500 for
    the reference backend), as :mod:`simclip_bench.memory.adaptive_batch` does."""
    parsed = parse_batch_size(batch_size)
    if parsed != AUTO:
        return int(parsed)
    return 500 if reference or device.name == "cpu" else 512


def eval_memory(cost: ModelCost, precision: str) -> MemoryEstimate:
    """Bytes per image of an attack batch: the activations one gradient evaluation saves for its backward pass
    (counted in float32 on the meta device; halved for bf16, assumed) and APGD's per-image state; fixed: weights."""
    scale = BF16_ACTIVATIONS if precision == "bf16" else 1.0
    state = APGD_STATE_IMAGES * 3 * cost.image_size ** 2 * 4
    how = ("computed: tensors saved for backward, counted on the meta device in float32"
           + (", halved for bf16 (assumed)" if scale != 1 else "") + ", plus APGD's state")
    return MemoryEstimate(cost.grad_bytes * scale + state, cost.weight_bytes * (1.5 if precision == "bf16" else 1),
                          how)


def plan_eval(protocol: Protocol, models: list[str], datasets: list[str], batch_size: str | int, precision: str,
              device: PlanDevice) -> CostPlan:
    """The plan of a zero-shot evaluation of ``models`` x ``datasets`` under ``protocol`` on ``device``."""
    extents = dataset_extents(datasets)
    eps = protocol.eps_values()
    reference = protocol.spec().backend == "reference"
    search = search_precision(precision, device, reference)
    batch = working_batch(batch_size, device, reference)
    rows: list[PlanRow] = []
    setup = device.setup_seconds
    memory = None
    for spec_text in models:
        arch = planned_architecture(spec_text)
        cost = model_cost(arch.config)
        setup += device.load_seconds(cost.weight_bytes)
        setup += sum(shapes_render_seconds(d.images, cost.image_size) for d in extents if d.name == BUILTIN)
        mine = eval_memory(cost, search)
        memory = mine if memory is None or mine.per_image > memory.per_image else memory
        for data in extents:
            wanted = protocol.n_samples_for(data.name)
            if "n_samples" in protocol.overridden and wanted > data.images:
                raise UserError(f"--n-samples {wanted} exceeds the {data.images} images of {data.name}; "
                                "lower --n-samples")
            rows.append(_cell(protocol, spec_text, arch.config, cost, data, min(wanted, data.images), eps, batch,
                              search, device))
    notes = [f"dataset {d.name}: {d.images:,} images, {d.classes} classes, {d.templates} templates ({d.source})"
             for d in extents]
    if reference:
        notes.append("the reference backend runs in float32; its FAB-T is counted at one gradient per iteration")
    return CostPlan("eval", device, search, batch, rows, memory or MemoryEstimate(0, 0, ""), setup, notes)


def _cell(protocol: Protocol, model: str, arch: str, cost: ModelCost, data, n: int, eps: list, batch: int,
          search: str, device: PlanDevice) -> PlanRow:
    spec = protocol.spec_for(data.classes)
    budget = ensemble_budget(spec, data.classes)
    audit = protocol.audit_spec_for(data.classes)
    audited = math.ceil(protocol.audit_fraction * n) if audit is not None else 0
    audit_budget = ensemble_budget(audit, data.classes) if audit is not None else None
    k = len(eps) if not spec.is_clean else 1
    grads = n * k * budget.grad_evals + (audited * k * audit_budget.grad_evals if audit_budget else 0)
    forwards = n * k * budget.forward_passes + (audited * k * audit_budget.forward_passes if audit_budget else 0)
    text_flops = data.classes * data.templates * cost.text_flops
    calls = k * ensemble_passes(spec, data.classes, n, batch) + data.classes + chunks(n, batch)
    if audit is not None and audited:
        calls += k * ensemble_passes(audit, data.classes, audited, batch)
    gradient_seconds = device.seconds(grads * cost.grad_flops, 0, search)
    seconds = (device.seconds(grads * cost.grad_flops, calls, search)
               + device.seconds(forwards * cost.forward_flops + text_flops, 0, "fp32"))
    what = f"{spec.name} x {k} eps" + (f" + audit {audit.name} on {audited}" if audited else "")
    detail = "; ".join(budget.detail) + (f"; audit: {audit_budget.grad_evals:g} per audited image"
                                         if audited else "")
    return PlanRow(model, arch, data.name, n, what, budget.grad_evals, grads, forwards,
                   grads * cost.grad_flops + forwards * cost.forward_flops + text_flops, seconds, detail,
                   gradient_seconds)
