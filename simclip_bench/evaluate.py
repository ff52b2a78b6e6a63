"""``simclip eval`` as a library call: resolve models and data, run the task, append the tidy rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import resolve_device
from simclip_bench.eps import Eps
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.models.builtin import DEFAULT_MODEL
from simclip_bench.models.spec import load_model
from simclip_bench.provenance import new_run_id
from simclip_bench.results.store import append_results
from simclip_bench.tasks.zeroshot import ZeroShotSettings, evaluate_zero_shot
from simclip_bench.train.trainer import DEFAULT_RUNS_DIR, latest_run

DATASETS = ("shapes",)


@dataclass
class EvalRequest:
    """One ``simclip eval`` invocation. ``models`` empty means: the built-in base model and the latest run."""

    models: list[str] = field(default_factory=list)
    dataset: str = "shapes"
    attack: str = "apgd-ce"
    eps: list[Eps] = field(default_factory=list)
    n_samples: int = 1000
    n_iter: int = 100
    batch_size: int = 500
    seed: int = 0
    out: Path = Path("simclip-results")
    device: str = "auto"
    runs_dir: Path = DEFAULT_RUNS_DIR


@dataclass
class EvalResult:
    rows: list[dict]
    results_path: Path
    samples_path: Path
    flags: list[str] = field(default_factory=list)


def default_models(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[str]:
    """The built-in base model, plus the latest ``simclip train`` run when there is one."""
    latest = latest_run(runs_dir)
    return [DEFAULT_MODEL] + ([str(latest)] if latest else [])


def validate(request: EvalRequest) -> ZeroShotSettings:
    """Check everything that can be checked before a model is loaded; return the task settings."""
    if request.dataset not in DATASETS:
        raise UserError(f"unknown dataset {request.dataset!r}{did_you_mean(request.dataset, DATASETS)}; "
                        f"choose one of {', '.join(DATASETS)}")
    settings = ZeroShotSettings(attack=request.attack, eps=request.eps, n_samples=request.n_samples,
                                n_iter=request.n_iter, batch_size=request.batch_size, seed=request.seed)
    settings.validate()
    available = len(ShapesDataset("test"))
    if settings.n_samples > available:
        raise UserError(f"--n-samples {settings.n_samples} exceeds the {available} test images of {request.dataset}")
    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out} is a file; pass a directory for results.csv and samples.csv")
    resolve_device(request.device)
    return settings


def run_eval(request: EvalRequest, progress=None) -> EvalResult:
    """Evaluate every requested model; append rows only after all of them finished (nothing half-written)."""
    settings = validate(request)
    device = resolve_device(request.device)
    specs = request.models or default_models(request.runs_dir)
    loaded = [load_model(spec, device) for spec in specs]  # fail on a bad spec before any attack runs
    run_id = new_run_id()
    rows: list[dict] = []
    sample_rows: list[dict] = []
    flags: list[str] = []
    for model in loaded:
        dataset = ShapesDataset("test", image_size=model.model.image_size)
        task = None
        if progress is not None:
            name = model.model_id if len(model.model_id) <= 24 else "…" + model.model_id[-23:]
            total = 0 if settings.spec().is_clean else len(settings.eps)
            task = progress.add_task(name, total=max(total, 1), info=f"{settings.spec().name} per eps")
        outcome = evaluate_zero_shot(model, dataset, settings, run_id, device,
                                     on_eps_done=(lambda t=task: progress.advance(t)) if task is not None else None)
        if task is not None:
            progress.update(task, completed=progress.tasks[task].total)
        flags += [f"{model.model_id}: {f}" for f in outcome.flags]
        rows += outcome.rows
        sample_rows += outcome.sample_rows
    results_path, samples_path = append_results(request.out, rows, sample_rows)
    return EvalResult(rows=rows, results_path=results_path, samples_path=samples_path, flags=flags)
