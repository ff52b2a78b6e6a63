"""The suites of ``simclip bench``: what each one trains and evaluates, and the task runners they call.

Definitions only (no torch, no result files), so ``simclip ls protocols`` lists them at once; running a suite
is :mod:`simclip_bench.jobs.bench`. A new task joins every suite by one line in :data:`TASK_RUNNERS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simclip_bench.attacks.eps import parse_eps
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.progress import SILENT, Reporter


@dataclass(frozen=True)
class TaskContext:
    """What a task runner gets: the models to compare and the suite's budget; it appends to ``out``."""

    models: list[str]
    eps: list[str]
    protocol: str
    attack: str | None
    n_samples: int
    iterations: int
    seed: int
    out: Path
    device: str
    reporter: Reporter = SILENT
    precision: str = "auto"


def _run_zeroshot(ctx: TaskContext) -> None:
    from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval

    run_eval(EvalRequest(models=ctx.models, datasets=["shapes"], protocol=ctx.protocol, attack=ctx.attack,
                         eps=ctx.eps, n_samples=ctx.n_samples, n_iter=ctx.iterations, sample_seed=ctx.seed,
                         seed=ctx.seed, out=ctx.out, device=ctx.device, precision=ctx.precision),
             ctx.reporter)


def _vlm_runner(task: str) -> Callable[[TaskContext], None]:
    """Captioning or VQA with the tiny VLM on the built-in data, RobustVLM's attack ensemble, each encoder."""

    def run(ctx: TaskContext) -> None:
        from simclip_bench.jobs.vlm_eval import VLMEvalRequest, run_vlm_eval

        run_vlm_eval(VLMEvalRequest(task=task, models=ctx.models, eps=[parse_eps(e) for e in ctx.eps],
                                    n_samples=ctx.n_samples, n_iter=ctx.iterations, seed=ctx.seed,
                                    sample_seed=ctx.seed, out=ctx.out, device=ctx.device,
                                    precision=ctx.precision), ctx.reporter)

    return run


# Every task a suite can run. Adding a task is one line here.
TASK_RUNNERS: dict[str, Callable[[TaskContext], None]] = {
    "zeroshot": _run_zeroshot,
    "captioning": _vlm_runner("captioning"),
    "vqa": _vlm_runner("vqa"),
}
ALL_TASKS: tuple[str, ...] = tuple(TASK_RUNNERS)


@dataclass(frozen=True)
class FineTune:
    """One fine-tuned model of a suite: ``simclip train`` with these options and the suite's recipe.

    ``anchor_weight`` > 0 with ``objective`` ``simclip`` is the blend of the paper's loss and the released
    code's anchor; ``collapse_stop`` 0 lets a collapsing run (the paper's form) finish, so its row shows it.
    """

    objective: str
    eps: str = "4/255"
    anchor_weight: float = 0.0
    collapse_stop: float | None = None  # None: simclip train's default

    @property
    def label(self) -> str:
        """The objective as run names and logs show it (``simclip-anchor1`` for the blend)."""
        return self.objective + (f"-anchor{self.anchor_weight:g}" if self.anchor_weight else "")


@dataclass(frozen=True)
class Suite:
    """A benchmark: which base model, which fine-tuned variants, which tasks, eps and attack.

    ``fine_tunes`` lists the fine-tuned models; when empty, each of ``objectives`` at ``train_eps``.
    ``protocol`` is the zero-shot protocol, ``extra_protocols`` more zero-shot protocols run on the same
    samples (their rows get columns of their own). ``task_samples`` overrides ``n_samples`` per task.
    """

    name: str
    description: str
    base_model: str = "tiny-clip"
    objectives: tuple[str, ...] = ("simclip-anchored",)
    train_eps: str = "4/255"
    train_steps: int | None = None  # None: the model's recipe
    train_batch_size: int | None = None
    train_warmup_steps: int | None = None
    train_size: int = 20000
    tasks: tuple[str, ...] = ("zeroshot",)
    eps: tuple[str, ...] = ("2/255", "4/255")
    protocol: str = "robustvlm"  # simclip_bench.tasks.protocols; attack, eps, n_samples, iterations override it
    attack: str | None = None
    n_samples: int = 500
    iterations: int = 100
    seed: int = 0
    fine_tunes: tuple[FineTune, ...] = ()
    extra_protocols: tuple[str, ...] = ()
    task_samples: tuple[tuple[str, int], ...] = ()

    def trained(self) -> tuple[FineTune, ...]:
        """The suite's fine-tuned models, in order."""
        return self.fine_tunes or tuple(FineTune(o, self.train_eps) for o in self.objectives)

    def zeroshot_protocols(self) -> tuple[str, ...]:
        return (self.protocol, *self.extra_protocols)

    def samples_for(self, task: str) -> int:
        return dict(self.task_samples).get(task, self.n_samples)

    def describe(self) -> str:
        tunes = ", ".join(f"{t.label} {t.eps}" for t in self.trained()) or "no"
        samples = ", ".join(f"{t} {self.samples_for(t)}" for t in self.tasks)
        return (f"{self.description}: {self.base_model} and {tunes} fine-tunes; tasks {', '.join(self.tasks)}; "
                f"clean and {', '.join(self.eps)}; zero-shot protocol {' and '.join(self.zeroshot_protocols())}"
                f"{f' with {self.attack}' if self.attack else ''}, {self.iterations} iterations; samples: {samples}")


# The showcase's models: the paper's Sim-CLIP (run to the end, so its row shows whether it collapsed), the released
# code's, the blend of the two, FARE and TeCoA, each at 4/255 with its default recipe, and Sim-CLIP at 2/255.
SHOWCASE_FINE_TUNES = (FineTune("simclip", collapse_stop=0.0), FineTune("simclip-anchored"),
                       FineTune("simclip", anchor_weight=1.0), FineTune("fare"), FineTune("tecoa"),
                       FineTune("simclip-anchored", "2/255"))
# Samples per task, chosen so that the whole suite fits about 60 minutes on a 2-core CPU (benchmarks/RESULTS.md).
SHOWCASE_SAMPLES = (("zeroshot", 40), ("captioning", 30), ("vqa", 40))

SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("default", "the embedded default: base and Sim-CLIP tiny CLIP, APGD-CE", protocol="default"),
    Suite("full", "the embedded default on every task: zero-shot (APGD-CE), and captioning and VQA with the tiny "
          "VLM (RobustVLM's ensemble)", protocol="default", tasks=ALL_TASKS, n_samples=200),
    Suite("robustvlm", "the embedded default under RobustVLM's attack (APGD-CE then APGD-T), 1 000 samples",
          n_samples=1000),
    Suite("showcase", "the showcase: every objective on every task under the strongest protocols (zero-shot: "
          "RobustVLM's apgd-ce*5+apgd-t and standard AutoAttack; captioning and VQA: RobustVLM's ensemble)",
          fine_tunes=SHOWCASE_FINE_TUNES, tasks=ALL_TASKS, protocol="robustvlm", extra_protocols=("autoattack",),
          task_samples=SHOWCASE_SAMPLES),
    Suite("smoke", "a seconds-long check of the whole pipeline (numbers meaningless)", train_steps=3,
          train_batch_size=8, train_warmup_steps=1, train_size=64, n_samples=16, iterations=3, protocol="default"),
)}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}{did_you_mean(name, SUITES)}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


def validate_suite(suite: Suite) -> None:
    """Fail before any work on a task with no runner or an eps that does not parse."""
    missing = [t for t in suite.tasks if t not in TASK_RUNNERS]
    if missing:
        raise UserError(f"suite {suite.name!r} names tasks without a runner: {', '.join(missing)}")
    from simclip_bench.tasks.protocols import get_protocol

    for protocol in suite.zeroshot_protocols():
        get_protocol(protocol).override(attack=suite.attack, eps=list(suite.eps),
                                        n_samples=suite.samples_for("zeroshot"), n_iter=suite.iterations).validate()
    for e in suite.eps:
        try:
            parse_eps(e)
        except ValueError as err:
            raise UserError(f"suite {suite.name!r}: {err}") from None
