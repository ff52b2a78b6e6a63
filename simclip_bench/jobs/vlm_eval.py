"""``simclip eval --task captioning|vqa`` as a library call: one VLM, several vision encoders, clean and
under attack, into tidy rows (``results.csv``) and per-sample outcomes with the generated texts
(``vlm_samples.csv``).

With no ``--vlm`` and no ``--dataset``: the built-in tiny VLM on the built-in generated data, with the
base encoder ``tiny-clip`` and the latest ``simclip train`` run side by side.
"""
from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from simclip_bench.data.vlm_files import CAPTION_DATASETS, VQA_DATASETS, caption_dataset, vqa_dataset
from simclip_bench.data.vlm_samples import VLMDataset, shapes_captioning, shapes_vqa
from simclip_bench.devices import check_precision, resolve_device, resolve_precision
from simclip_bench.eps import Eps, unique_eps
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.grid import unique_values
from simclip_bench.metrics.vqa_accuracy import DEFAULT_VQA_METRIC, VQA_METRICS
from simclip_bench.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from simclip_bench.models.checkpoint import atomic_write_text
from simclip_bench.progress import SILENT, Reporter
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.results.intervals import mean_interval
from simclip_bench.results.schema import RESULT_COLUMNS
from simclip_bench.results.store import RESULTS_FILE, VLM_SAMPLES_FILE, upsert_results
from simclip_bench.runs import DEFAULT_RUNS_DIR, latest_run
from simclip_bench.tasks.captioning import CaptioningTask
from simclip_bench.tasks.vlm_attack import VLMAttackConfig, attack_vlm, planned_runs
from simclip_bench.tasks.vqa import VQATask
from simclip_bench.vlm.base import NATIVE_ENCODER, LoadedVLM
from simclip_bench.vlm.load import DEFAULT_VLM, check_vlm_spec, load_vlm

TASKS: tuple[str, ...] = ("zeroshot", "captioning", "vqa")
VLM_TASKS: tuple[str, ...] = ("captioning", "vqa")
# --attack for captioning/VQA: RobustVLM's ensemble, one APGD run on the first ground truth, or clean only.
VLM_ATTACKS: dict[str, str] = {"ensemble": "ensemble", "robustvlm": "ensemble", "apgd": "single", "none": "none"}
DEFAULT_N_SAMPLES = {"shapes": 200, "files": 500}
VLM_SAMPLE_COLUMNS: tuple[str, ...] = (
    "run_id", "model", "checkpoint_hash", "task", "dataset", "sample_id", "attack", "setting", "eps", "eps_text",
    "prompt", "references", "clean_text", "clean_score", "adv_text", "adv_score", "fooled_by", "max_perturbation",
    "grad_evals",
)


@dataclass
class VLMEvalRequest:
    """One ``simclip eval --task captioning|vqa``; empty ``models`` = base encoder + latest run (tiny VLM)."""

    task: str = "captioning"
    vlm: str = DEFAULT_VLM
    models: list[str] = field(default_factory=list)
    dataset: str = "shapes"
    dataset_root: str = "datasets/{dataset}"
    attack: str = "ensemble"
    eps: list[Eps] = field(default_factory=list)
    n_samples: int | None = None
    n_iter: int = 100
    batch_size: int = 64
    seed: int = 0
    sample_seed: int = 0
    out: Path = Path("simclip-results")
    device: str = "auto"
    runs_dir: Path = DEFAULT_RUNS_DIR
    allow_unsafe_pickle: bool = False  # full unpickling of pickled encoder weights (see load_model)
    # Search dtype of the ground-truth runs: auto = bf16 on CUDA (RobustVLM: float16), fp32 on a CPU.
    precision: str = "auto"
    # VQA only: how answers are normalised before matching (metrics/vqa_accuracy.py); recorded in every row.
    vqa_metric: str = DEFAULT_VQA_METRIC


@dataclass
class VLMEvalResult:
    rows: list[dict]
    sample_rows: list[dict]
    results_path: Path
    samples_path: Path


def validate(request: VLMEvalRequest) -> None:
    """Everything that can be checked before a model is loaded."""
    if request.task not in VLM_TASKS:
        raise UserError(f"unknown task {request.task!r}{did_you_mean(request.task, TASKS)}; "
                        f"choose one of {', '.join(TASKS)}")
    check_vlm_spec(request.vlm)
    known = ("shapes", *(CAPTION_DATASETS if request.task == "captioning" else VQA_DATASETS))
    if request.dataset not in known:
        raise UserError(f"unknown {request.task} dataset {request.dataset!r}{did_you_mean(request.dataset, known)}; "
                        f"choose one of {', '.join(known)}")
    if request.attack not in VLM_ATTACKS:
        raise UserError(f"--attack {request.attack!r} does not apply to {request.task}"
                        f"{did_you_mean(request.attack, VLM_ATTACKS)}; use {', '.join(VLM_ATTACKS)}")
    for name, value in (("--iterations", request.n_iter), ("--batch-size", request.batch_size),
                        ("--n-samples", request.n_samples if request.n_samples is not None else 1)):
        if value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value}")
    if request.vqa_metric not in VQA_METRICS:
        raise UserError(f"unknown --vqa-metric {request.vqa_metric!r}{did_you_mean(request.vqa_metric, VQA_METRICS)}; "
                        f"choose one of {', '.join(VQA_METRICS)}")
    if VLM_ATTACKS[request.attack] != "none" and not request.eps:
        raise UserError("an attack needs at least one --eps, e.g. --eps 4/255")
    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out} is a file; pass a directory")
    check_precision(request.precision)
    resolve_device(request.device)


def default_encoders(request: VLMEvalRequest) -> list[str]:
    """Tiny VLM: ``tiny-clip`` and the latest run; LLaVA: its own tower only."""
    if request.vlm.startswith("llava:"):
        return [NATIVE_ENCODER]
    latest = latest_run(request.runs_dir)
    return [DEFAULT_MODEL] + ([str(latest)] if latest else [])


def load_dataset(request: VLMEvalRequest) -> VLMDataset:
    """The evaluated subset: fixed per (dataset, n, sample seed), the same for every encoder."""
    if request.dataset == "shapes":
        n = request.n_samples or DEFAULT_N_SAMPLES["shapes"]
        return shapes_captioning(n) if request.task == "captioning" else shapes_vqa(n)
    root = Path(request.dataset_root.replace("{dataset}", request.dataset)).expanduser()
    read = caption_dataset if request.task == "captioning" else vqa_dataset
    full = read(request.dataset, root)
    n = request.n_samples if request.n_samples is not None else min(DEFAULT_N_SAMPLES["files"], len(full))
    return full.subset(n, request.sample_seed)


def _setting(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def evaluate_one(loaded: LoadedVLM, dataset: VLMDataset, request: VLMEvalRequest, run_id: str,
                 on_run_done: Callable[[str], None] | None = None,
                 reporter: Reporter = SILENT) -> tuple[list[dict], list[dict]]:
    """Clean and attacked scores of one VLM+encoder: (result rows, per-sample rows).

    ``reporter`` gets one progress line counting samples through the clean outputs and every attack run at
    every eps (N samples each), with the run and the mean score so far as its info.
    """
    vlm = loaded.vlm
    task = (CaptioningTask(dataset) if request.task == "captioning"
            else VQATask(dataset, metric_variant=request.vqa_metric))
    # How the texts are scored: part of every row's attack_config and setting, clean rows included, so rows
    # scored by different VQA metric variants never replace or average with each other.
    scoring = {"vqa_metric": request.vqa_metric} if request.task == "vqa" else {}
    device = vlm.device
    precision = resolve_precision(request.precision, device)
    x = dataset.images(vlm.image_size).to(device)
    prompts = task.prompts(vlm)
    protocol = VLM_ATTACKS[request.attack]
    configs = [] if protocol == "none" else [
        VLMAttackConfig(eps=eps.value, n_iter=request.n_iter, protocol=protocol, targets=task.attack_targets,
                        stop_below=dataset.stop_below, batch_size=request.batch_size, seed=request.seed,
                        precision=precision) for eps in request.eps]
    line = reporter.start(loaded.model_id[-28:], total=len(x) * (1 + sum(len(planned_runs(c)) for c in configs)),
                          info="clean outputs")
    t0 = time.time()
    clean_texts = []
    for s in range(0, len(x), request.batch_size):
        clean_texts += vlm.generate(x[s:s + request.batch_size], prompts[s:s + request.batch_size])
        reporter.advance(line, len(x[s:s + request.batch_size]))
    indices = list(range(len(x)))
    clean_scores = task.score(vlm, indices, clean_texts)
    common = {"run_id": run_id, "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
              "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash, "task": request.task,
              "dataset": dataset.name, "split": dataset.split, "n_samples": len(x), "sample_seed": request.sample_seed,
              "device": str(device), "metric": task.metric, "flags": ""}
    rows = [_row(common, "none", scoring, None, clean_scores, time.time() - t0, protocol)]
    samples: list[dict] = []
    refs = [json.dumps(list(s.references)) for s in dataset.samples]
    base_sample = {"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash,
                   "task": request.task, "dataset": dataset.name}
    if protocol == "none":
        for i, s in enumerate(dataset.samples):
            samples.append({**base_sample, "sample_id": s.sample_id, "attack": "none",
                            "setting": rows[0]["setting"], "eps": 0.0, "eps_text": "0", "prompt": prompts[i],
                            "references": refs[i],
                            "clean_text": clean_texts[i], "clean_score": clean_scores[i], "adv_text": clean_texts[i],
                            "adv_score": clean_scores[i], "fooled_by": "", "max_perturbation": 0.0,
                            "grad_evals": 0.0})
        reporter.complete(line)
        return rows, samples
    for eps, config in zip(request.eps, configs, strict=True):
        t0 = time.time()
        runs = planned_runs(config)

        def progress(run: str, k: int, mean: float, eps: Eps = eps, runs: list[str] = runs) -> None:
            reporter.set_info(line, f"{eps.text}: run {runs.index(run) + 1}/{len(runs)} {run}, mean {task.metric} "
                                    f"×100 {100 * mean:.1f}")
            reporter.advance(line, k)

        outcome = attack_vlm(vlm, x, prompts, task.ground_truth(), lambda idx, texts: task.score(vlm, idx, texts),
                             clean_texts, clean_scores, config, on_run_done=on_run_done, on_progress=progress)
        attack_name = f"apgd-{protocol}"
        described = {**config.describe(), **scoring}
        cost = outcome.grad_evals.tolist()
        rows.append(_row(common, attack_name, described, eps, outcome.scores, time.time() - t0, protocol)
                    | {"grad_evals": round(statistics.fmean(cost), 2)})
        setting = _setting({**described, "eps": eps.value, "norm": "linf"})
        norms = outcome.norms.tolist()
        for i, s in enumerate(dataset.samples):
            samples.append({**base_sample, "sample_id": s.sample_id, "attack": attack_name, "setting": setting,
                            "eps": eps.value, "eps_text": eps.text, "prompt": prompts[i], "references": refs[i],
                            "clean_text": clean_texts[i], "clean_score": clean_scores[i],
                            "adv_text": outcome.texts[i], "adv_score": outcome.scores[i],
                            "fooled_by": outcome.fooled_by[i], "max_perturbation": norms[i], "grad_evals": cost[i]})
    reporter.complete(line)
    return rows, samples


def _row(common: dict, attack: str, config: dict, eps: Eps | None, scores: Sequence[float], seconds: float,
         protocol: str) -> dict:
    mean, lo, hi = mean_interval(scores)
    # A clean row's setting is "" unless its config says how it was scored (the VQA metric variant).
    setting = _setting({**config, "eps": eps.value, "norm": "linf"}) if eps else _setting(config) if config else ""
    row = {**common, "attack": attack, "attack_config": json.dumps(config, sort_keys=True),
           "setting": setting,
           "protocol": protocol if eps else "", "norm": "linf" if eps else "", "eps": eps.value if eps else 0.0,
           "eps_text": eps.text if eps else "0", "value": mean, "ci_low": lo, "ci_high": hi,
           "seconds": round(seconds, 2), "grad_evals": 0.0}
    return {c: row.get(c, "") for c in RESULT_COLUMNS}


def _append_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    new = pd.DataFrame(list(rows), columns=list(columns))
    if path.exists():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in columns if c not in old.columns]
        if missing:
            raise UserError(f"{path} was written by another version (no column {missing[0]!r}); write to a new --out")
        new = pd.concat([old[list(columns)], new.astype(str)], ignore_index=True)
    atomic_write_text(path, new.to_csv(index=False))


def run_vlm_eval(request: VLMEvalRequest, reporter: Reporter = SILENT) -> VLMEvalResult:
    """Evaluate every encoder in the VLM; write per-sample rows, then result rows, once all are done.

    ``reporter`` shows one progress line per encoder, counting samples through the clean outputs and each attack
    run (:func:`evaluate_one`), and gets the notices for the user only after the dataset and every input check
    have passed.
    """
    validate(request)
    # an encoder or eps given twice is evaluated once (4/255 and 0.0156862745 are one eps)
    request = replace(request, models=unique_values(request.models, (*BUILTIN_MODELS, NATIVE_ENCODER)),
                      eps=unique_eps(request.eps))
    device = resolve_device(request.device)
    dataset = load_dataset(request)
    specs = request.models or default_encoders(request)
    if not request.models and request.vlm == DEFAULT_VLM and len(specs) == 1:
        reporter.notify(f"no finished 'simclip train' run under {request.runs_dir}/: evaluating {DEFAULT_MODEL} only")
    run_id = new_run_id()
    rows: list[dict] = []
    sample_rows: list[dict] = []
    for spec in specs:
        loaded = load_vlm(request.vlm, spec, device, request.allow_unsafe_pickle)
        r, s = evaluate_one(loaded, dataset, request, run_id, reporter=reporter)
        rows += r
        sample_rows += s
    request.out.mkdir(parents=True, exist_ok=True)
    samples_path = request.out / VLM_SAMPLES_FILE
    _append_csv(samples_path, sample_rows, VLM_SAMPLE_COLUMNS)
    upsert_results(request.out, rows)
    return VLMEvalResult(rows, sample_rows, request.out / RESULTS_FILE, samples_path)

