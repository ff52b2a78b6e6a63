"""A cost plan: rows of work with their worst-case counts, FLOPs and predicted time, the memory a batch needs, and
the plain-text report ``--dry-run`` prints.

Every count is a worst case (an upper bound: every image clean-correct and never fooled, so every attack runs its
whole budget; see :mod:`.attack_budget`), and so is the time predicted from it. A real run costs less where images
are misclassified or fooled early; on an interpreter-bound device (a small model on a CPU) the time shrinks less
than the count, since a batch keeps iterating while any of its images is still attacked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from simclip_bench.plan.devices import PlanDevice

GIB = 2**30
MEMORY_MARGIN = 0.9  # of the device's memory, for the allocator's fragmentation and the CUDA context


@dataclass(frozen=True)
class PlanRow:
    """One piece of work: a (model, dataset) cell of an evaluation, or a training run.

    ``grad_evals`` and ``forward_passes`` are totals over the row's images; ``per_image`` the worst-case
    gradient evaluations of one image; ``flops`` the counted FLOPs of all of it; ``calls`` its batched calls.
    """

    model: str
    arch: str
    work: str  # the dataset (eval) or the data (train)
    images: int
    what: str  # the attack and eps list, or the objective
    per_image: float
    grad_evals: float
    forward_passes: float
    flops: float
    seconds: float
    detail: str = ""
    gradient_seconds: float = 0.0  # the part of ``seconds`` spent on the gradient evaluations' FLOPs

    def seconds_at(self, grad_evals: float) -> float:
        """The predicted time had the row cost ``grad_evals`` gradient evaluations instead of its worst case (the
        batched calls unchanged: a batch iterates while any of its images is attacked)."""
        scale = grad_evals / self.grad_evals if self.grad_evals else 1.0
        return self.seconds - self.gradient_seconds * (1 - scale)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per image of a working batch, bytes that do not depend on the batch, and how they were obtained."""

    per_image: float
    fixed: float
    how: str

    def batch_that_fits(self, memory_gib: float) -> int:
        free = memory_gib * GIB * MEMORY_MARGIN - self.fixed
        return max(0, int(free // self.per_image)) if self.per_image > 0 else 0


@dataclass
class CostPlan:
    """The plan of one ``--dry-run``: its rows, the device it is for, and what it assumed."""

    kind: str  # "eval", "vlm" or "train"
    device: PlanDevice
    precision: str
    batch_size: int
    rows: list[PlanRow]
    memory: MemoryEstimate
    setup_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def grad_evals(self) -> float:
        return sum(r.grad_evals for r in self.rows)

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.rows)

    @property
    def seconds(self) -> float:
        return self.setup_seconds + sum(r.seconds for r in self.rows)


def _count(value: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.4g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min" if seconds >= 60 \
        else f"{seconds:.3g} s"


def render(plan: CostPlan) -> list[str]:
    """The plan as plain lines: the grid, totals, memory and the assumptions behind the time."""
    d = plan.device
    head = ("model", "arch", "data" if plan.kind == "train" else "dataset", "images",
            "objective" if plan.kind == "train" else "attack x eps", "grad evals/image", "grad evals", "forwards",
            "PFLOP", "time")
    rows = [head] + [(r.model, r.arch, r.work, f"{r.images:,}", r.what, f"{r.per_image:,.1f}", _count(r.grad_evals),
                      _count(r.forward_passes), f"{r.flops / 1e15:.4g}", _hours(r.seconds)) for r in plan.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    case = {"train": "exact: training never stops early",
            "vlm": "worst case: every run of the protocol on every sample"}.get(
        plan.kind, "worst case: every image clean-correct and never fooled")
    lines = [f"cost plan ({plan.kind}; {case}) on {d.description}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"total: {_count(plan.grad_evals)} gradient evaluations, {plan.flops / 1e15:.4g} PFLOP, "
              f"{_hours(plan.seconds)} predicted on {d.name} (at most; setup {_hours(plan.setup_seconds)})"]
    fits = plan.memory.batch_that_fits(d.memory_gib)
    if plan.memory.per_image > 0:
        lines.append(f"memory: {_bytes(plan.memory.per_image)} per image of a working batch + "
                     f"{_bytes(plan.memory.fixed)} fixed ({plan.memory.how}); {d.memory_gib:g} GiB hold a batch "
                     f"of about {fits:,}" + (f" (the run starts at {plan.batch_size} and halves on out-of-memory)"
                                             if plan.batch_size > fits else ""))
    else:
        lines.append(f"memory: {plan.memory.how}; a batch that runs out of memory is halved")
    eff = ", ".join(f"{p} {100 * d.efficiency[p]:.1f} % of {d.peak_flops[p] / 1e12:g} TFLOP/s"
                    for p in ("bf16", "fp32"))
    lines.append(f"assumed on {d.name}: {eff}; {1000 * d.call_seconds:g} ms per batched call; search precision "
                 f"{plan.precision} ({d.source})")
    lines += plan.notes
    details: dict[str, list[str]] = {}
    for r in plan.rows:
        if r.detail:
            details.setdefault(r.detail, []).append(r.work)
    for detail, where in details.items():
        shown = ", ".join(dict.fromkeys(where))
        lines.append(f"  {shown if len(shown) < 60 else f'{len(set(where))} datasets'}: {detail}")
    return lines


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def chunks(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0
