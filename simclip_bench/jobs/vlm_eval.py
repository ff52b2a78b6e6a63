"""``simclip eval --task captioning|vqa|pope|scienceqa`` as a library call: one VLM, several vision encoders,
clean and under attack, into tidy rows (``results.csv``) and per-sample outcomes with the generated texts
(``vlm_samples.csv``). Datasets, tasks and task settings: :mod:`simclip_bench.jobs.vlm_tasks`.

With no ``--vlm`` and no ``--dataset``: the built-in tiny VLM on the built-in generated data, with the
base encoder ``tiny-clip`` and the latest ``simclip train`` run side by side.

Per-sample rows are appended ``--batch-size`` samples at a time under the store's lock, each (encoder, task,
dataset, setting, sample) once, so a killed run resumes, and several processes (shards,
:mod:`simclip_bench.jobs.shards`) can share one store; the result rows are computed from the stored samples
by the process that finds the encoder's samples complete.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from simclip_bench.attacks.eps import Eps, unique_eps
from simclip_bench.data.vlm_samples import VLMDataset
from simclip_bench.devices import check_precision, resolve_device, resolve_precision
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.grid import unique_values
from simclip_bench.jobs.shards import SINGLE, Shard, detect_shard, launcher_notices, shard_device
from simclip_bench.jobs.vlm_tasks import (
    VLM_TASKS,
    build_prompts,
    check_task_options,
    known_datasets,
    load_datasets,
    make_task,
    task_setting,
)
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.metrics.vqa_accuracy import DEFAULT_VQA_METRIC, VQA_METRICS
from simclip_bench.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from simclip_bench.progress import SILENT, Reporter
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.results.identity import VLM_SAMPLE_KEY, subset_id
from simclip_bench.results.schema import RESULT_COLUMNS, VLM_SAMPLE_COLUMNS, mean_grad_evals
from simclip_bench.results.store import (
    RESULTS_FILE,
    VLM_SAMPLES_FILE,
    append_samples,
    check_merge_sources,
    check_store,
    merge_samples,
    upsert_results,
)
from simclip_bench.runs import DEFAULT_RUNS_DIR, latest_run
from simclip_bench.tasks.scienceqa import DEFAULT_STYLE as DEFAULT_SCIENCEQA_PROMPT
from simclip_bench.tasks.vlm_attack import VLMAttackConfig, attack_vlm, planned_runs
from simclip_bench.tasks.vlm_rows import done_samples, result_rows, setting_id, stored_samples
from simclip_bench.vlm.base import NATIVE_ENCODER, LoadedVLM
from simclip_bench.vlm.llava import DEFAULT_LLAVA_ENCODER
from simclip_bench.vlm.load import DEFAULT_VLM, check_vlm_spec, load_vlm

TASKS: tuple[str, ...] = ("zeroshot", *VLM_TASKS)
# --attack for captioning/VQA: RobustVLM's ensemble, one APGD run on the first ground truth, or clean only.
VLM_ATTACKS: dict[str, str] = {"ensemble": "ensemble", "robustvlm": "ensemble", "apgd": "single", "none": "none"}


@dataclass
class VLMEvalRequest:
    """One ``simclip eval --task captioning|vqa|pope|scienceqa``; empty ``models`` = base encoder + latest run
    (tiny VLM), ``ViT-L-14:openai`` (LLaVA, OpenFlamingo: RobustVLM's baseline)."""

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
    # This process's part of the samples (``--shard K/N``); None = from torchrun's or Slurm's variables, else all.
    shard: str | None = None
    # Other stores (e.g. one per shard) whose per-sample rows are copied into ``out`` first (``--merge-from``).
    merge_from: list[Path] = field(default_factory=list)
    # ScienceQA only: robustvlm (bash/eval_scienceqa.sh) or llava (sqa.sh --single-pred-prompt); in every row.
    scienceqa_prompt: str = DEFAULT_SCIENCEQA_PROMPT
    # OpenFlamingo only: demonstrations with images per prompt (0: two text-only ones, RobustVLM's zero-shot).
    shots: int = 0


@dataclass
class VLMEvalResult:
    rows: list[dict]
    sample_rows: list[dict]
    results_path: Path
    samples_path: Path
    shard: Shard = SINGLE
    pending: list[str] = field(default_factory=list)  # cells still owed by other shards ("encoder / dataset")


def validate(request: VLMEvalRequest) -> None:
    """Everything that can be checked before a model is loaded."""
    if request.task not in VLM_TASKS:
        raise UserError(f"unknown task {request.task!r}{did_you_mean(request.task, TASKS)}; "
                        f"choose one of {', '.join(TASKS)}")
    check_vlm_spec(request.vlm)
    known = known_datasets(request.task)
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
    check_task_options(request.task, request.vlm, request.scienceqa_prompt, request.shots)
    if request.vqa_metric not in VQA_METRICS:
        raise UserError(f"unknown --vqa-metric {request.vqa_metric!r}{did_you_mean(request.vqa_metric, VQA_METRICS)}; "
                        f"choose one of {', '.join(VQA_METRICS)}")
    if VLM_ATTACKS[request.attack] != "none" and not request.eps:
        raise UserError("an attack needs at least one --eps, e.g. --eps 4/255")
    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out} is a file; pass a directory")
    check_precision(request.precision)
    resolve_device(request.device)
    detect_shard(request.shard)
    check_merge_sources(request.merge_from, VLM_SAMPLES_FILE, request.out)
    check_store(request.out, [(VLM_SAMPLES_FILE, VLM_SAMPLE_COLUMNS), (RESULTS_FILE, RESULT_COLUMNS)])
    for source in request.merge_from:
        check_store(source, [(VLM_SAMPLES_FILE, VLM_SAMPLE_COLUMNS)])


def default_encoders(request: VLMEvalRequest) -> list[str]:
    """Tiny VLM: ``tiny-clip`` and the latest run; LLaVA and OpenFlamingo: ``ViT-L-14:openai`` at 224 px, the
    encoder RobustVLM swaps in for its baseline (``pretrained_rob_path=openai``)."""
    if request.vlm != DEFAULT_VLM and not request.vlm.endswith(".safetensors"):
        return [DEFAULT_LLAVA_ENCODER]
    latest = latest_run(request.runs_dir)
    return [DEFAULT_MODEL] + ([str(latest)] if latest else [])


@dataclass
class _Setting:
    """One row of the table: clean (``config`` None) or one eps of the attack."""

    setting: str
    attack: str
    described: dict
    eps: Eps | None = None
    config: VLMAttackConfig | None = None


def evaluate_one(loaded: LoadedVLM, dataset: VLMDataset, request: VLMEvalRequest, run_id: str,
                 on_run_done: Callable[[str], None] | None = None,
                 reporter: Reporter = SILENT, shard: Shard = SINGLE) -> tuple[list[dict] | None, list[dict]]:
    """Clean and attacked scores of one VLM+encoder: (result rows, or None while other shards still owe samples;
    the per-sample rows computed now).

    Resumable and shardable like zero-shot: this process evaluates ``shard``'s interleaved part of the samples,
    ``request.batch_size`` at a time, skipping samples whose rows are in ``vlm_samples.csv``, and appends each
    chunk's rows (every setting) under the store's lock. A sample's outcome does not depend on its batch mates,
    and scores use the whole subset (CIDEr's document frequencies), so any split gives the same rows. The
    result rows are computed from the stored samples once every sample is there, in dataset order.

    ``reporter`` gets one progress line counting this process's samples through the clean outputs and every
    attack run at every eps, with the run and the mean score so far as its info.
    """
    vlm = loaded.vlm
    task = make_task(request.task, dataset, request.vqa_metric, request.scienceqa_prompt)
    # How the texts are made and scored (VQA metric, ScienceQA prompt, CIDEr subset, shots): part of every row's
    # attack_config and setting, clean rows included, so rows of different settings never replace each other.
    all_prompts = build_prompts(task, vlm, dataset, request.dataset_root, request.shots, request.sample_seed)
    scoring = task_setting(request.task, dataset, request.vlm, request.vqa_metric, request.scienceqa_prompt,
                           request.shots, all_prompts)
    generation = vlm.generation(request.task, dataset.name)
    pad_fill = vlm.image_prep(request.task).pad_fill
    device = vlm.device
    precision = resolve_precision(request.precision, device)
    protocol = VLM_ATTACKS[request.attack]
    settings = [_Setting(setting_id(scoring) if scoring else "", "none", scoring)]
    if protocol != "none":
        settings = []  # the clean scores ride along in every attacked row
        for eps in request.eps:
            config = VLMAttackConfig(eps=eps.value, n_iter=request.n_iter, protocol=protocol,
                                     targets=task.attack_targets, stop_below=dataset.stop_below,
                                     batch_size=request.batch_size, seed=request.seed, precision=precision,
                                     generation=generation)
            described = {**config.describe(), **scoring}
            settings.append(_Setting(setting_id({**described, "eps": eps.value, "norm": "linf"}), f"apgd-{protocol}",
                                     described, eps, config))
    all_truth = task.ground_truth(vlm)
    ids = [s.sample_id for s in dataset.samples]
    done = done_samples(request.out, loaded, request.task, dataset)
    own = shard.take(list(range(len(dataset))))
    todo = [p for p in own if any((st.setting, ids[p]) not in done for st in settings)]
    n_runs = sum(len(planned_runs(st.config)) for st in settings if st.config)
    line = reporter.start(loaded.model_id[-28:], total=len(own) * (1 + n_runs), info="clean outputs")
    reporter.advance(line, (len(own) - len(todo)) * (1 + n_runs))
    t0 = time.time()
    base_sample = {"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash,
                   "vlm_hash": loaded.vlm_hash, "task": request.task, "dataset": dataset.name,
                   "data_id": dataset.data_id}
    computed: list[dict] = []
    # A chunk that runs out of memory runs again at half the size, and so does an attack run inside it
    # (attack_vlm gets the same AdaptiveBatch); outcomes do not depend on the chunk (see above).
    batch = AdaptiveBatch(request.batch_size, "VLM batch", notify=reporter.notify)

    def chunk(part: list[int]) -> None:
        x = dataset.images(vlm.image_size, part, pad_fill).to(device)
        prompts = [all_prompts[p] for p in part]
        clean_texts = vlm.generate_with(x, prompts, generation)
        reporter.advance(line, len(part))
        clean_scores = task.score(vlm, part, clean_texts)
        rows: list[dict] = []
        for st in settings:
            if st.config is None:
                texts, scores, fooled, norms = clean_texts, clean_scores, [""] * len(part), [0.0] * len(part)
                cost = [0.0] * len(part)
            else:
                def progress(run: str, k: int, mean: float, st: _Setting = st) -> None:
                    runs = planned_runs(st.config)
                    reporter.set_info(line, f"{st.eps.text}: run {runs.index(run) + 1}/{len(runs)} {run}, mean "
                                            f"{task.metric} ×100 {100 * mean:.1f}")
                    reporter.advance(line, k)

                outcome = attack_vlm(vlm, x, prompts, [all_truth[p] for p in part],
                                     lambda idx, texts, part=part: task.score(vlm, [part[i] for i in idx], texts),
                                     clean_texts, clean_scores, st.config, on_run_done=on_run_done,
                                     on_progress=progress, batch=batch)
                texts, scores, fooled, norms = outcome.texts, outcome.scores, outcome.fooled_by, outcome.norms.tolist()
                cost = outcome.grad_evals.tolist()
            for k, p in enumerate(part):
                if (st.setting, ids[p]) in done:
                    continue
                s = dataset.samples[p]
                rows.append({**base_sample, "sample_id": ids[p], "attack": st.attack, "setting": st.setting,
                             "eps": st.eps.value if st.eps else 0.0, "eps_text": st.eps.text if st.eps else "0",
                             "prompt": prompts[k], "references": json.dumps(list(s.references)),
                             "clean_text": clean_texts[k], "clean_score": clean_scores[k], "adv_text": texts[k],
                             "adv_score": scores[k], "fooled_by": fooled[k], "max_perturbation": norms[k],
                             "grad_evals": cost[k]})
        append_samples(request.out, rows, VLM_SAMPLE_COLUMNS, VLM_SAMPLE_KEY, VLM_SAMPLES_FILE)
        computed.extend(rows)

    batch.map_chunks(len(todo), lambda part: chunk(todo[part]))
    reporter.complete(line)
    stored = stored_samples(request.out, loaded, request.task, dataset)
    if any(not set(ids) <= set(stored.get(st.setting, {})) for st in settings):
        return None, computed  # another shard still owes samples: it writes the rows when it finishes
    common = {"run_id": run_id, "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
              "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash, "text_hash": "",
              "vlm_hash": loaded.vlm_hash, "task": request.task, "dataset": dataset.name, "data_id": dataset.data_id,
              "data_source": dataset.source, "split": dataset.split, "n_samples": len(ids), "n_requested": len(ids),
              "sample_seed": request.sample_seed, "subset_id": subset_id(ids), "device": str(device), "flags": ""}
    seconds = time.time() - t0
    first = stored[settings[0].setting]
    rows = result_rows(common, "none", scoring, None, task.summarise([first[i]["clean_text"] for i in ids],
                                                               [float(first[i]["clean_score"]) for i in ids]),
                 seconds, protocol)
    for st in settings:
        if st.config is not None:
            mine = [stored[st.setting][i] for i in ids]
            cost = {"grad_evals": mean_grad_evals([r.get("grad_evals") for r in mine])}
            rows += [r | cost for r in result_rows(common, st.attack, st.described, st.eps,
                                             task.summarise([r["adv_text"] for r in mine],
                                                            [float(r["adv_score"]) for r in mine]), seconds, protocol)]
    for row in rows:  # the batch that worked, beside the setting (outcomes do not depend on it: not in the key)
        row["attack_config"] = json.dumps({**json.loads(row["attack_config"]), "batch_size": batch.size},
                                          sort_keys=True)
    return rows, computed


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
    shard = detect_shard(request.shard)
    device = shard_device(resolve_device(request.device), shard)
    datasets = load_datasets(request.task, request.dataset, request.dataset_root, request.n_samples,
                             request.sample_seed)
    specs = request.models or default_encoders(request)
    if not request.models and request.vlm == DEFAULT_VLM and len(specs) == 1:
        reporter.notify(f"no finished 'simclip train' run under {request.runs_dir}/: evaluating {DEFAULT_MODEL} only")
    for notice in launcher_notices(request.shard):
        reporter.notify(notice)
    if request.merge_from:
        merge_samples(request.out, request.merge_from, VLM_SAMPLES_FILE, VLM_SAMPLE_COLUMNS, VLM_SAMPLE_KEY)
    run_id = new_run_id()
    rows: list[dict] = []
    sample_rows: list[dict] = []
    pending: list[str] = []
    for spec in specs:
        loaded = load_vlm(request.vlm, spec, device, request.allow_unsafe_pickle, shots=request.shots)
        for dataset in datasets:  # POPE: one per split
            r, s = evaluate_one(loaded, dataset, request, run_id, reporter=reporter, shard=shard)
            sample_rows += s
            if r is None:
                pending.append(f"{loaded.model_id} / {dataset.name}")
            else:  # this process completed the cell (the last shard to finish, or a re-run): it writes its rows
                upsert_results(request.out, r)
                rows += r
    return VLMEvalResult(rows, sample_rows, request.out / RESULTS_FILE, request.out / VLM_SAMPLES_FILE, shard,
                         pending)
