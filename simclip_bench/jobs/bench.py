"""``simclip bench``: a suite (:mod:`simclip_bench.jobs.suites`) run end to end into a results directory with
its leaderboard.

A suite trains the fine-tuned models it compares (skipping a run already trained with the same
settings), evaluates every model on every task that has a runner in
:data:`~simclip_bench.jobs.suites.TASK_RUNNERS`, at clean and each eps, and writes a fresh
``results.csv``/``samples.csv``, the model cards, the resolved suite (``bench_config.json``) and the
leaderboard.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from simclip_bench.attacks.eps import parse_eps
from simclip_bench.errors import UserError
from simclip_bench.jobs.suites import TASK_RUNNERS, FineTune, Suite, TaskContext, validate_suite
from simclip_bench.models.checkpoint import ENCODER_FILENAME, atomic_write_text
from simclip_bench.progress import SILENT, Reporter
from simclip_bench.results.model_cards import card_for_spec, write_cards
from simclip_bench.results.schema import split_vlm_model_id
from simclip_bench.results.store import RESULTS_FILE, SAMPLES_FILE, VLM_SAMPLES_FILE, read_results
from simclip_bench.runs import DEFAULT_RUNS_DIR, run_config

BENCH_CONFIG_FILE = "bench_config.json"


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


def run_suite(suite: Suite, out: Path, runs_dir: Path = DEFAULT_RUNS_DIR, device: str = "auto",
              log: Callable[[str], None] = print, reporter: Reporter = SILENT, precision: str = "auto") -> Path:
    """Run ``suite``; replace OUT's result files with the fresh ones only once everything finished.

    ``log`` gets a line per training and per task; ``reporter`` the evaluations' progress lines.
    ``precision``: the attack search dtype of every evaluation (``auto``: the task's CUDA default, fp32 on a CPU).
    """
    from simclip_bench.leaderboard.render import render_leaderboard

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
