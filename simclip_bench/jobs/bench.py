"""``simclip bench``: named benchmark suites, run end to end into a results directory with its leaderboard.

A suite trains the fine-tuned models it compares (skipping a run already trained with the same
settings), evaluates every model on every task that has a runner in :data:`TASK_RUNNERS`, at
clean and each eps, and writes a fresh ``results.csv``/``samples.csv``, the model cards, the
resolved suite (``bench_config.json``) and the leaderboard. A new task joins every suite by one
line in :data:`TASK_RUNNERS`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from simclip_bench.eps import parse_eps
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text
from simclip_bench.progress import SILENT, Reporter
from simclip_bench.results.model_cards import card_for_spec, write_cards
from simclip_bench.results.schema import split_vlm_model_id
from simclip_bench.results.store import RESULTS_FILE, SAMPLES_FILE, VLM_SAMPLES_FILE, read_results
from simclip_bench.runs import DEFAULT_RUNS_DIR, run_config

BENCH_CONFIG_FILE = "bench_config.json"


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


def _train_config(suite: Suite, tune: FineTune, device: str):
    from simclip_bench.train.config import TrainConfig

    cfg = TrainConfig(model=suite.base_model, objective=tune.objective, anchor_weight=tune.anchor_weight,
                      eps=tune.eps, seed=suite.seed, train_size=suite.train_size, device=device)
    if tune.collapse_stop is not None:
        cfg.collapse_stop = tune.collapse_stop
    for name in ("steps", "batch_size", "warmup_steps"):
        if getattr(suite, f"train_{name}") is not None:
            setattr(cfg, name, getattr(suite, f"train_{name}"))
    cfg.validate()
    return cfg


def run_name(base_model: str, objective: str, eps: str, steps: int) -> str:
    """The run directory name of a suite's fine-tune (``objective`` as :attr:`FineTune.label` gives it):
    suites with the same training share it."""
    k = parse_eps(eps).value * 255
    eps_part = f"eps{round(k)}" if abs(k - round(k)) < 1e-6 else "eps" + eps.replace("/", "_")
    safe_base = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in base_model)
    return f"{safe_base}-{objective}-{eps_part}-{steps}steps"


# Settings that make two runs the same model. ``anchor_weight`` and ``collapse_stop`` of a run that predates
# them read as their defaults (0.0 and 0.2).
_SAME_RUN = ("model", "objective", "eps", "steps", "batch_size", "lr", "seed", "train_size")
_SAME_RUN_DEFAULTS = {"anchor_weight": 0.0, "collapse_stop": 0.2}


def ensure_trained(suite: Suite, runs_dir: Path, device: str, log: Callable[[str], None] = print,
                   reporter: Reporter = SILENT) -> list[str]:
    """Train each fine-tuned model of the suite unless an identical finished run exists; return their specs.
    ``reporter`` gets a progress line per training, counting steps."""
    from simclip_bench.train.loop import train

    specs = []
    for tune in suite.trained():
        cfg = _train_config(suite, tune, device)
        run_dir = Path(runs_dir) / run_name(suite.base_model, tune.label, tune.eps, cfg.steps)
        cfg.out = str(run_dir)
        if (run_dir / ENCODER_FILENAME).is_file():
            done = run_config(run_dir)
            if (any(done.get(k) != getattr(cfg, k) for k in _SAME_RUN)
                    or any(done.get(k, d) != getattr(cfg, k) for k, d in _SAME_RUN_DEFAULTS.items())):
                raise UserError(f"{run_dir} holds a run with other settings; remove it or pass another --runs-dir")
            log(f"reusing {run_dir}")
        else:
            log(f"training {tune.label} at {tune.eps} on {suite.base_model} into {run_dir}")
            line, done_steps = reporter.start(f"train {tune.label} {tune.eps}", total=cfg.steps), [0]

            def progress(step: int, record: dict, line=line, done_steps=done_steps) -> None:
                reporter.set_info(line, f"loss {record['loss']:+.3f}")
                reporter.advance(line, step - done_steps[0])
                done_steps[0] = step

            train(cfg, progress=progress, log=log)
        specs.append(str(run_dir))
    return specs


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


def run_suite(suite: Suite, out: Path, runs_dir: Path = DEFAULT_RUNS_DIR, device: str = "auto",
              log: Callable[[str], None] = print, reporter: Reporter = SILENT, precision: str = "auto") -> Path:
    """Run ``suite``; replace OUT's result files with the fresh ones only once everything finished.

    ``log`` gets a line per training and per task; ``reporter`` the evaluations' progress lines.
    ``precision``: the attack search dtype of every evaluation (``auto``: the task's CUDA default, fp32 on a CPU).
    """
    from simclip_bench.leaderboard import render_leaderboard

    validate_suite(suite)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory")
    models = [suite.base_model, *ensure_trained(suite, runs_dir, device, log, reporter)]
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bench-", dir=out))
    try:
        for task in suite.tasks:
            for protocol in suite.zeroshot_protocols() if task == "zeroshot" else (suite.protocol,):
                log(f"evaluating {task}{f' ({protocol})' if task == 'zeroshot' else ''}: {', '.join(models)}")
                TASK_RUNNERS[task](TaskContext(models=models, eps=list(suite.eps), protocol=protocol,
                                               attack=suite.attack, n_samples=suite.samples_for(task),
                                               iterations=suite.iterations, seed=suite.seed, out=staging,
                                               device=device, reporter=reporter, precision=precision))
        rows = read_results(staging)
        keys = sorted({(split_vlm_model_id(m)[0], h) for m, h in zip(rows["model"], rows["checkpoint_hash"],
                                                                        strict=False)})  # encoders, not VLMs
        write_cards(staging, [card_for_spec(m, h) for m, h in keys])
        resolved = {**asdict(replace(suite)), "models": models, "runs_dir": str(runs_dir), "device": device}
        if precision != "auto":
            resolved["precision"] = precision
        atomic_write_text(staging / BENCH_CONFIG_FILE, json.dumps(resolved, indent=2) + "\n")
        for name in (SAMPLES_FILE, VLM_SAMPLES_FILE, "model_cards.json", BENCH_CONFIG_FILE, RESULTS_FILE):
            if (staging / name).exists():
                os.replace(staging / name, out / name)
            else:  # a file this suite's tasks do not write: none left over from an earlier suite either
                (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    render_leaderboard(out, out)
    return out
