"""``simclip eval``."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from simclip_bench.attacks.eps import Eps
from simclip_bench.cli.app import app, eps_list, stdout, unsafe_pickle_option, warn_unsafe_pickle
from simclip_bench.cli.config_file import config_option
from simclip_bench.cli.eval_tables import print_paired, print_rows, print_summary, print_unreadable, print_vlm_rows
from simclip_bench.cli.out_dirs import check_out_dir
from simclip_bench.cli.reporting import rich_reporter
from simclip_bench.cli.threads import apply_threads, threads_option
from simclip_bench.errors import UserError

MAX_VLM_BATCH = 64  # captioning/VQA cap --batch-size here (auto: this; the zero-shot attacks start at 500 or 512)


@app.command(name="eval", epilog="""[bold]Examples[/bold]

  simclip eval                  # tiny-clip vs. the latest 'simclip train' run
  simclip eval --attack apgd --eps 2/255 --eps 4/255
  simclip eval --norm l2 --eps 0.5                   # an l2 attack, radius 0.5
  simclip eval --protocol robustvlm          # RobustVLM's zero-shot protocol
  simclip eval --protocol fast     # a fraction of the budget, audited on 10 %
  simclip eval --attack autoattack --eps 4/255   # AutoAttack (reference code)
  simclip eval --dataset ./my-folder --n-samples 200    # any ImageFolder
  simclip eval --config eval.toml --eps 2/255   # a file's options; flags win
  simclip eval --threads 1             # one torch thread: for a shared machine
  simclip eval --task captioning   # tiny VLM: base encoder vs. the latest run
  simclip eval --task vqa --vqa-metric robustvlm    # VQA accuracy as RobustVLM

  # the cost first: grid, gradient evaluations, memory, hours on an H100
  simclip eval --protocol robustvlm --dry-run --plan-device h100
  # RobustVLM's zero-shot table on a GPU (see docs/commands.md for the datasets)
  simclip eval --protocol robustvlm --dataset robustvlm --device cuda
  # LLaVA-1.5 with the 224-px OpenAI tower (RobustVLM's baseline), then your run
  simclip eval --task vqa --vlm llava:llava-hf/llava-1.5-7b-hf --device cuda
  simclip eval --task vqa --vlm llava:llava-hf/llava-1.5-7b-hf --model runs/x
  simclip eval --task pope --vlm llava:DIR --dataset pope --attack none

  # Scale out: 8 GPUs, each a part of every cell; the last writes the table
  torchrun --nproc_per_node 8 -m simclip_bench eval --device cuda
  simclip eval --shard 3/8 --out shared/   # part 3 of 8 (e.g. a Slurm array)
  simclip eval --balance dynamic --out shared/   # any number of these: chunks""")
def eval_(
    config: Path = config_option(),
    task: str = typer.Option("zeroshot", help="zeroshot (default), or a VLM task (see --vlm): captioning, vqa, pope "
                                              "(object hallucination) or scienceqa (ScienceQA-IMG)."),
    vlm: str = typer.Option(
        None, help="VLM for the VLM tasks: tiny-vlm (default, built-in), llava:<hub id or folder> or "
                   "openflamingo:<folder>; --model then names the vision encoders swapped into it."),
    model: list[str] = typer.Option(
        None, help="Model spec; repeat for several. Default: tiny-clip and the latest run under runs/."),
    dataset: list[str] = typer.Option(
        None, help="shapes (built-in), a CLIP_benchmark name (cifar10, imagenet1k, ...), a collection "
                   "(robustvlm = its 13 datasets, imagenet) or an ImageFolder path; repeat for several. "
                   "Default: shapes."),
    dataset_root: str = typer.Option(
        "datasets/{dataset}", help="Where CLIP_benchmark datasets are on disk; {dataset} becomes the name."),
    protocol: str = typer.Option(
        "default", help="Preset: default (APGD-CE, 4/255, 1000 samples), robustvlm, autoattack, quick, fast "
                        "(MALT-ranked targets, audited against apgd-ce+apgd-t). "
                        "The options below override its fields."),
    attack: str = typer.Option(
        None, help="apgd-ce | apgd-dlr | apgd-t | square | pgd, an ensemble joined with '+' "
                   "(apgd-ce*5+apgd-t = robustvlm: RobustVLM's protocol; *K = K restarts), autoattack, ref:<ensemble>, "
                   "or none (clean only)."),
    eps: list[str] = typer.Option(
        None, help="Radius in pixel units (4/255 or 0.0157); repeat for several."),
    norm: str = typer.Option(None, help="linf (default) or l2."),
    n_samples: int = typer.Option(None, help="Fixed samples per dataset (a seeded subset, the same for every model)."),
    iterations: int = typer.Option(None, help="Iterations of each gradient attack (Square keeps its 5000 queries)."),
    n_targets: int = typer.Option(None, help="Target classes of APGD-T (default 9, at most classes-1)."),
    sample_seed: int = typer.Option(None, help="Seed of the fixed sample subset (default 0)."),
    seed: int = typer.Option(None, help="Attack seed (default 0)."),
    batch_size: str = typer.Option(
        "auto", help="Working-batch size of the attacks, also the unit of resume; halved when a batch runs out of "
                     "memory. auto: 512 on CUDA, 500 on a CPU (captioning/VQA: 64)."),
    workers: int = typer.Option(0, help="Image-decoding worker processes for datasets on disk."),
    on_error: str = typer.Option(
        None, help="An unreadable image: skip (default: left out of every accuracy, counted and listed) or fail "
                   "(stop at the first). Zero-shot only."),
    out: Path = typer.Option(Path("simclip-results"), help="Result store: results.csv, samples.csv, summary.csv."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    vqa_metric: str = typer.Option(
        None, help="VQA accuracy variant (--task vqa): official (default; the VQA challenge's evaluation) or "
                   "robustvlm (RobustVLM's, which also normalises the human answers)."),
    scienceqa_prompt: str = typer.Option(
        None, help="--task scienceqa: robustvlm (default; RobustVLM's script) or llava (adds LLaVA-1.5's "
                   "'Answer with the option's letter...' sentence)."),
    shots: int = typer.Option(
        None, help="--vlm openflamingo: demonstrations with images per prompt (default 0: two text-only ones, "
                   "RobustVLM's zero-shot)."),
    precision: str = typer.Option(
        "auto", help="Attack search dtype: auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16 (also on a CPU). "
                     "Every reported verdict is computed in fp32."),
    audit_fraction: float = typer.Option(
        None, help="--protocol fast: the fraction of each dataset's samples also attacked with the full "
                   "apgd-ce+apgd-t, to measure what the fast protocol missed (default 0.1; 0 = no audit)."),
    shard: str = typer.Option(
        None, help="K/N: evaluate part K (0-based) of N of every cell (samples K, K+N, ...) into the shared --out; "
                   "the last part to finish writes the table. Default: from torchrun (RANK/WORLD_SIZE) or Slurm "
                   "(array, srun) variables, else everything."),
    balance: str = typer.Option(
        None, help="How processes share the work (zero-shot): static (default: each its fixed part, see --shard) or "
                   "dynamic (each takes the next free chunk of --batch-size samples from the store as it goes: one "
                   "slow GPU no longer holds the run up; any number of processes can join)."),
    merge_from: list[Path] = typer.Option(
        None, help="Another store (e.g. one --out per shard, where file locks across machines cannot be trusted): "
                   "its per-sample rows are copied into --out first (each once), then the grid is completed and "
                   "its table written. Repeat for several."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the cost plan (grid, worst-case gradient evaluations, FLOPs, memory, predicted "
                                 "time) and stop; nothing is downloaded and no model is loaded (the tiny VLM is "
                                 "counted as it is)."),
    plan_device: str = typer.Option(
        None, help="With --dry-run: the device to predict the time on: h100, a100, h200 or cpu. Default: the run's."),
    allow_unsafe_pickle: bool = unsafe_pickle_option(),
    threads: int = threads_option(),
) -> None:
    """Zero-shot accuracy, clean and under attack, for every model x dataset x eps; resumes from OUT."""
    warn_unsafe_pickle(allow_unsafe_pickle)
    apply_threads(threads)
    if plan_device is not None and not dry_run:
        raise UserError("--plan-device applies to --dry-run; add --dry-run")
    check_out_dir(out)
    if shard is not None:  # a bad --shard gets its one line before any model or dataset is touched
        from simclip_bench.jobs.shards import parse_shard

        parse_shard(shard)
    if vqa_metric is not None and task != "vqa":
        raise UserError(f"--vqa-metric applies to --task vqa only (got --task {task}); drop --vqa-metric")
    if scienceqa_prompt is not None and task != "scienceqa":
        raise UserError(f"--scienceqa-prompt applies to --task scienceqa only (got --task {task}); drop it")
    if task != "zeroshot" or vlm:  # captioning / VQA / POPE / ScienceQA with a VLM: simclip_bench.jobs.vlm_eval
        if on_error is not None:
            raise UserError("--on-error applies to --task zeroshot; captioning and VQA stop at an unreadable "
                            "image, so drop --on-error")
        if audit_fraction is not None:
            raise UserError("--audit-fraction applies to --task zeroshot with --protocol fast; drop it")
        if balance not in (None, "static"):
            raise UserError(f"--balance {balance}: captioning and VQA split their samples statically (--shard); "
                            "drop --balance")
        _eval_vlm(task=task, vlm=vlm, models=list(model or []), datasets=list(dataset or []),
                     dataset_root=dataset_root, attack=attack, eps=eps_list(eps or ["4/255"]), n_samples=n_samples,
                     iterations=iterations, batch_size=batch_size, seed=seed, sample_seed=sample_seed, out=out,
                     device=device, allow_unsafe_pickle=allow_unsafe_pickle, vqa_metric=vqa_metric, precision=precision,
                     shard=shard, merge_from=list(merge_from or []), scienceqa_prompt=scienceqa_prompt, shots=shots,
                     dry_run=dry_run, plan_device=plan_device)
        return
    if shots is not None:
        raise UserError("--shots applies to --vlm openflamingo:... (captioning and vqa); drop it")
    if norm in (None, "linf", "l2"):  # a bad eps gets its one line before the job (and torch) is imported
        eps_list(eps or [], norm=norm or "linf")
    from simclip_bench.data.unreadable import DEFAULT_ON_ERROR
    from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval, validate

    request = EvalRequest(models=list(model or []), datasets=list(dataset or ["shapes"]), dataset_root=dataset_root,
                          protocol=protocol, attack=attack, eps=list(eps) if eps else None, norm=norm,
                          n_samples=n_samples, n_iter=iterations, n_targets=n_targets, sample_seed=sample_seed,
                          seed=seed, batch_size=batch_size, workers=workers, on_error=on_error or DEFAULT_ON_ERROR,
                          out=out, device=device, allow_unsafe_pickle=allow_unsafe_pickle, precision=precision,
                          audit_fraction=audit_fraction, balance=balance or "static",
                          shard=shard, merge_from=list(merge_from or []))
    validate(request)
    if dry_run:
        _print_plan(request, plan_device)
        return
    with rich_reporter() as reporter:
        result = run_eval(request, reporter)
    if result.pending:
        _print_pending(result.shard, result.pending, out)
    if not result.rows:
        stdout.print(f"{result.computed} samples computed, {result.reused} reused from {out}/", markup=False)
        return
    _record_run(request, result, config)
    print_rows(result)
    print_summary(result)
    print_paired(result)
    for flag in result.flags:
        stdout.print(f"[bold red]masking check:[/] {escape(flag)}")
    from simclip_bench.results.audit import FLAG_FAST_MISSED

    for line in result.audits:
        style = "bold red" if f"{FLAG_FAST_MISSED}(" in line else "bold"
        stdout.print(f"[{style}]audit:[/] {escape(line)}")
    if result.pooled_audit is not None and len(result.audits) > 1:
        stdout.print(f"[bold]audit:[/] {escape(result.pooled_audit.line())}")
    print_unreadable(result)
    stdout.print(f"{result.computed} samples computed, {result.reused} reused from {out}/ "
                 f"| results: {result.results_path}  per-sample: {result.samples_path}", markup=False)


def _print_pending(shard, pending: list[str], out: Path) -> None:
    """A shard done with its part while others are still at work: which cells wait, and who writes them."""
    stdout.print(f"shard {shard}: part done; {len(pending)} cell(s) wait for other shards ({', '.join(pending[:3])}"
                 f"{', ...' if len(pending) > 3 else ''}). The last shard to finish writes {out}/results.csv; "
                 "re-run a shard that died (the same command) to finish it.", highlight=False, markup=False,
                 soft_wrap=True)


def _eval_vlm(task: str, vlm: str | None, models: list[str], datasets: list[str], dataset_root: str,
              attack: str | None, eps: list[Eps], n_samples: int | None, iterations: int | None, batch_size: str,
              seed: int | None, sample_seed: int | None, out: Path, device: str, allow_unsafe_pickle: bool = False,
              precision: str = "auto", vqa_metric: str | None = None, shard: str | None = None,
              merge_from: list[Path] | None = None, scienceqa_prompt: str | None = None,
              shots: int | None = None, dry_run: bool = False, plan_device: str | None = None) -> None:
    """What ``simclip eval --task captioning|vqa|pope|scienceqa`` (or any ``--vlm``) runs: evaluate, print, write."""
    from simclip_bench.jobs.vlm_eval import DEFAULT_SCIENCEQA_PROMPT, VLMEvalRequest, run_vlm_eval, validate
    from simclip_bench.metrics.vqa_accuracy import DEFAULT_VQA_METRIC
    from simclip_bench.vlm.load import DEFAULT_VLM

    if len(datasets) > 1:
        raise UserError(f"--task {task} takes one --dataset at a time, got {', '.join(datasets)}")
    request = VLMEvalRequest(task=task, vlm=vlm or DEFAULT_VLM, models=list(models),
                             dataset=(list(datasets) or ["shapes"])[0],
                             dataset_root=dataset_root, attack=attack or "ensemble", eps=list(eps),
                             n_samples=n_samples, n_iter=iterations or 100, batch_size=_vlm_batch(batch_size),
                             seed=seed or 0, sample_seed=sample_seed or 0, out=out, device=device,
                             allow_unsafe_pickle=allow_unsafe_pickle, precision=precision,
                             vqa_metric=vqa_metric or DEFAULT_VQA_METRIC, shard=shard,
                             merge_from=list(merge_from or []),
                             scienceqa_prompt=scienceqa_prompt or DEFAULT_SCIENCEQA_PROMPT, shots=shots or 0)
    validate(request)
    if dry_run:
        _print_plan(request, plan_device)
        return
    with rich_reporter() as reporter:
        result = run_vlm_eval(request, reporter)
    if result.pending:
        _print_pending(result.shard, result.pending, out)
    if not result.rows:
        return
    print_vlm_rows(task, request.dataset, request.vqa_metric, result, request.scienceqa_prompt)


def _print_plan(request, plan_device: str | None) -> None:
    """``--dry-run``: the cost plan of a zero-shot or captioning/VQA request, as plain lines."""
    from simclip_bench.jobs.plan import plan_eval_request, plan_vlm_request
    from simclip_bench.plan.cost_plan import render

    plan = plan_eval_request(request, plan_device) if hasattr(request, "protocol") else \
        plan_vlm_request(request, plan_device)
    for line in render(plan):
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)


def _vlm_batch(batch_size: str) -> int:
    """Captioning/VQA's batch: ``auto`` is :data:`MAX_VLM_BATCH`, a number is capped at it."""
    from simclip_bench.memory.adaptive_batch import AUTO, parse_batch_size

    parsed = parse_batch_size(batch_size)
    return MAX_VLM_BATCH if parsed == AUTO else min(int(parsed), MAX_VLM_BATCH)


def _record_run(request, result, config: Path | None) -> None:
    """Model cards and the resolved settings of this run, beside the results (for leaderboards and reruns)."""
    from dataclasses import asdict

    from simclip_bench.cli.config_file import save_resolved_config
    from simclip_bench.results.model_cards import record_cards_for_rows

    if not result.rows:
        return
    record_cards_for_rows(request.out, result.rows)
    settings = {**asdict(request), "resolved_protocol": result.protocol.record(),
                "config_file": str(config) if config else None}
    save_resolved_config(request.out, result.rows[0]["run_id"], "eval", settings)
