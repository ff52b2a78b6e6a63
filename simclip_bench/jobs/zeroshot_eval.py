"""``simclip eval`` (zero-shot) as a library call: a grid of models x datasets x eps under one protocol.

Everything that can be checked is checked before a model is loaded or an image attacked: the
protocol and its overrides, every dataset (where it was looked for), every model spec. Then each
(model, dataset) cell runs through :func:`simclip_bench.tasks.zeroshot.run_cell`, which appends
per-sample outcomes a batch at a time and skips samples already in the store (resume); the cell's
aggregate rows are written as soon as it is complete. The summary (average over datasets with a
confidence interval) and the paired differences are group-bys of the stored samples. An image that
cannot be read is left out and reported (``on_error="skip"``) or stops the run (``"fail"``).

A protocol with an audit (``fast``) also runs its full attack on a seeded random ``audit_fraction`` of
each cell's samples (:func:`audit_positions`); the rows carry the comparison (:mod:`simclip_bench.results.audit`).

Scale-out (:mod:`simclip_bench.jobs.shards`): a process with shard K/N evaluates the interleaved part K of
every cell into the shared store. A cell's rows are written by whichever process finds, after appending its
part, every sample of the cell in the store (the last to finish, or a re-run of any shard): the check
re-reads the store after the process's own last append, so the last appender always sees the whole cell,
and two that see it at once write the same rows (``upsert_results`` replaces by key). summary.csv and
paired.csv are written by a process that finds every cell of the grid complete. A killed shard is finished
by re-running the same command (its stored samples are skipped), or by any process without ``--shard``.
The reference backend's shards take whole batches (its random starts are drawn over a batch). With
``balance="dynamic"`` processes instead claim chunks of ``batch_size`` samples from the store as they go
(:mod:`simclip_bench.jobs.claims`), so a slow worker does fewer of them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from simclip_bench.data.catalog import DEFAULT_DATASET_ROOT, check_name, expand, open_source
from simclip_bench.data.subset import fixed_subset
from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FLAG_UNREADABLE, check_on_error
from simclip_bench.devices import check_precision, resolve_device, resolve_precision
from simclip_bench.errors import UserError
from simclip_bench.grid import unique_values
from simclip_bench.jobs.claims import BALANCES, CLAIMS_FILE, DEFAULT_LEASE_S, SINGLE_WORKER, Worker, cell_chunks
from simclip_bench.jobs.shards import SINGLE, Shard, detect_shard, launcher_notices, shard_device
from simclip_bench.memory.adaptive_batch import AUTO, parse_batch_size, resolve_batch_size
from simclip_bench.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from simclip_bench.models.spec import LoadedModel, load_model
from simclip_bench.progress import SILENT, Reporter
from simclip_bench.provenance import git_sha, new_run_id, package_version, utc_now
from simclip_bench.results.aggregate import CellMeta, cell_rows, paired_differences, summary_table
from simclip_bench.results.audit import FLAG_FAST_MISSED, PooledAudit, audit_line, audit_table, pooled_audit
from simclip_bench.results.schema import RESULT_COLUMNS, SAMPLE_COLUMNS, SAMPLE_KEY
from simclip_bench.results.store import (
    RESULTS_FILE,
    SAMPLES_FILE,
    check_merge_sources,
    check_store,
    merge_samples,
    read_samples,
    upsert_results,
)
from simclip_bench.runs import DEFAULT_RUNS_DIR, latest_run
from simclip_bench.tasks.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from simclip_bench.tasks.zeroshot import CellPlan, missing_samples, run_cell, unreadable_among
from simclip_bench.tasks.zeroshot_rows import done_keys

SUMMARY_FILE = "summary.csv"
CPU_BATCH = 500  # --batch-size auto on a CPU, and always for the reference backend (its batch is in its setting)
PAIRED_FILE = "paired.csv"
AUDIT_FILE = "audit.csv"  # a fast protocol's audit: per cell and pooled over the run
AUDIT_SEED_SALT = 0xA0D17  # the audited subset's seed is the sample seed with this salt


@dataclass
class EvalRequest:
    """One ``simclip eval`` invocation. ``models`` empty means: the built-in base model and the latest run.

    ``protocol`` names a preset; the fields after it override the preset when not None (eps as
    written, e.g. "4/255"; ``n_iter`` per gradient attack). ``batch_size`` is both the attack's first
    working batch and the unit of resume: ``auto`` (default) is 512 on CUDA and 500 on a CPU, and a batch that
    runs out of memory is halved (:mod:`simclip_bench.memory.adaptive_batch`), except the reference backend's,
    whose ``auto`` is always 500; ``workers`` decode images in parallel. ``on_error``: ``skip``
    (default) leaves an unreadable image out of every accuracy and reports it, ``fail`` stops at the first.
    ``allow_unsafe_pickle`` (default False) lets pickled ``.pt`` weights load with the full unpickler
    (see :func:`~simclip_bench.models.spec.load_model`). ``precision``: the attack search's dtype, ``auto``
    (bf16 on CUDA, fp32 on a CPU), ``fp32`` or ``bf16``; verdicts are always float32.
    """

    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=lambda: ["shapes"])
    dataset_root: str = DEFAULT_DATASET_ROOT
    protocol: str = DEFAULT_PROTOCOL
    attack: str | None = None
    eps: list[str] | None = None
    norm: str | None = None
    n_samples: int | None = None
    n_iter: int | None = None
    n_targets: int | None = None
    sample_seed: int | None = None
    seed: int | None = None
    batch_size: int | str = AUTO
    workers: int = 0
    on_error: str = DEFAULT_ON_ERROR
    out: Path = Path("simclip-results")
    device: str = "auto"
    runs_dir: Path = DEFAULT_RUNS_DIR
    allow_unsafe_pickle: bool = False
    precision: str = "auto"
    audit_fraction: float | None = None
    # This process's part of every cell (``--shard K/N``); None = from torchrun's or Slurm's variables, else all.
    shard: str | None = None
    # Other stores (e.g. one per shard) whose per-sample rows are copied into ``out`` first (``--merge-from``).
    merge_from: list[Path] = field(default_factory=list)
    # ``static``: the shard's fixed part of every cell; ``dynamic``: chunks claimed from the store as it goes
    # (simclip_bench.jobs.claims); ``claim_timeout``: seconds after which another worker's claim lapses.
    balance: str = "static"
    claim_timeout: float = DEFAULT_LEASE_S


@dataclass
class EvalResult:
    rows: list[dict]
    summary: pd.DataFrame
    paired: pd.DataFrame
    protocol: Protocol
    results_path: Path
    samples_path: Path
    computed: int = 0
    reused: int = 0
    flags: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one line per image left out (file and reason)
    audits: list[str] = field(default_factory=list)  # one line per audited row: what the full protocol found
    shard: Shard = SINGLE
    pending: list[str] = field(default_factory=list)  # cells still owed by other shards ("model / dataset")
    pooled_audit: PooledAudit | None = None  # the audit of every audited row of the grid together


def audit_positions(n: int, fraction: float, sample_seed: int) -> list[int]:
    """Positions (into a cell's fixed samples) of the audited ones: ``ceil(fraction * n)`` of them, a seeded
    random subset that is the same for every model, so audits are paired too."""
    if fraction <= 0:
        return []
    return sorted(fixed_subset(n, math.ceil(fraction * n), sample_seed ^ AUDIT_SEED_SALT))


def default_models(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[str]:
    """The built-in base model, plus the latest ``simclip train`` run when there is one."""
    latest = latest_run(runs_dir)
    return [DEFAULT_MODEL] + ([str(latest)] if latest else [])


def resolve_protocol(request: EvalRequest) -> Protocol:
    """The preset with the request's overrides, validated."""
    protocol = get_protocol(request.protocol).override(
        attack=request.attack, eps=request.eps, norm=request.norm, n_samples=request.n_samples,
        n_iter=request.n_iter, n_targets=request.n_targets, sample_seed=request.sample_seed,
        attack_seed=request.seed, audit_fraction=request.audit_fraction)
    protocol.validate()
    return protocol


def validate(request: EvalRequest) -> Protocol:
    """Check everything that can be checked without touching a dataset or a model."""
    protocol = resolve_protocol(request)
    parse_batch_size(request.batch_size)
    if request.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {request.workers}")
    check_on_error(request.on_error)
    check_precision(request.precision)
    if not request.datasets:
        raise UserError("no --dataset given; e.g. --dataset shapes")
    for name in request.datasets:
        check_name(name)
    if request.out.exists() and not request.out.is_dir():
        raise UserError(f"--out {request.out} is a file; pass a directory for results.csv and samples.csv")
    resolve_device(request.device)
    detect_shard(request.shard)
    if request.balance not in BALANCES:
        raise UserError(f"--balance {request.balance!r}: choose {' or '.join(BALANCES)}")
    if not request.claim_timeout > 0:
        raise UserError(f"claim timeout {request.claim_timeout}: give a number of seconds above 0")
    check_merge_sources(request.merge_from, SAMPLES_FILE, request.out)
    check_store(request.out, [(SAMPLES_FILE, SAMPLE_COLUMNS), (RESULTS_FILE, RESULT_COLUMNS)])
    for source in request.merge_from:
        check_store(source, [(SAMPLES_FILE, SAMPLE_COLUMNS)])
    return protocol


def run_eval(request: EvalRequest, reporter: Reporter = SILENT) -> EvalResult:
    """Evaluate the grid; returns the rows of this grid, its summary and paired differences.

    ``reporter`` shows one progress line per (model, dataset) cell, counting samples, and gets the notices for
    the user (e.g. that only the built-in model is evaluated) once every input check has passed.
    """
    protocol = validate(request)
    shard = detect_shard(request.shard)
    device = shard_device(resolve_device(request.device), shard)
    precision = resolve_precision(request.precision, device)
    sources = [open_source(name, request.dataset_root, request.workers) for name in expand(request.datasets)]
    for source in sources:
        wanted = protocol.n_samples_for(source.name)
        if "n_samples" in protocol.overridden and wanted > len(source):
            raise UserError(f"--n-samples {wanted} exceeds the {len(source)} images of {source.name}; "
                            "lower --n-samples")
    specs = unique_values(request.models, BUILTIN_MODELS) or default_models(request.runs_dir)  # repeats count once
    if not request.models and len(specs) == 1:
        reporter.notify(f"no finished 'simclip train' run under {request.runs_dir}/: evaluating {specs[0]} only")
    dynamic = request.balance == "dynamic"
    for notice in launcher_notices(request.shard):
        reporter.notify(notice)
    reference = protocol.spec().backend == "reference"
    first_batch = resolve_batch_size(request.batch_size, device, CPU_BATCH, CPU_BATCH if reference else None)
    if dynamic:
        reporter.notify(f"dynamic balance: chunks of {first_batch} samples claimed from "
                        f"{request.out}/{CLAIMS_FILE}, on {device}")
    elif not shard.whole:
        unit = f"batches of {first_batch} samples" if reference else "samples"
        what = f"{unit} {shard.index}, {shard.index + shard.count}, ..."
        reporter.notify(f"shard {shard} ({shard.source}): {what} of every cell, on {device}")
    me = Worker.this(SINGLE_WORKER if shard.source == "single" else f"{shard.source} {shard}")
    # fail on a bad spec before any attack runs
    loaded = [load_model(spec, device, request.allow_unsafe_pickle) for spec in specs]
    if request.merge_from:
        merge_samples(request.out, request.merge_from, SAMPLES_FILE, SAMPLE_COLUMNS, SAMPLE_KEY)
    run_id = new_run_id()
    record = protocol.record()
    cells: list[_Cell] = []
    flags: list[str] = []
    audits: list[str] = []
    unreadable: dict[str, None] = {}  # ordered set: the same file is unreadable for every model
    computed = reused = 0
    ids_by_dataset: dict[str, set[str]] = {}
    for model in loaded:
        for source in sources:
            indices = fixed_subset(len(source), protocol.n_samples_for(source.name), protocol.sample_seed)
            spec = protocol.spec_for(len(source.classnames))
            batch_size = resolve_batch_size(request.batch_size, device, CPU_BATCH,
                                            CPU_BATCH if spec.backend == "reference" else None)
            plan = CellPlan(source, indices, spec, protocol.eps_values(), protocol.norm, protocol.attack_seed,
                            batch_size, request.on_error, precision,
                            audit_spec=protocol.audit_spec_for(len(source.classnames)),
                            audit_positions=audit_positions(len(indices), protocol.audit_fraction,
                                                            protocol.sample_seed),
                            part=None if shard.whole or dynamic else
                            shard.part(indices, batch_size, whole_batches=spec.backend == "reference"))
            ids = [source.sample_id(i) for i in indices]
            ids_by_dataset[source.name] = set(ids)
            name = model.model_id if len(model.model_id) <= 20 else "…" + model.model_id[-19:]
            line = reporter.start(f"{name} {source.name}", total=len(plan.own), info=spec.name)
            t0 = time.time()
            stored = read_samples(request.out)
            done = done_keys(stored, model, source)
            chunks = cell_chunks(request.out, me, model, plan, stored, request.claim_timeout) if dynamic else None
            report = run_cell(model, plan, request.out, run_id, device, done,
                              on_batch=lambda k, line=line: reporter.advance(line, k),
                              on_status=lambda text, line=line, a=spec.name: reporter.set_info(line, f"{a} {text}"),
                              chunks=chunks, notify=reporter.notify)
            computed, reused = computed + report.computed, reused + report.reused
            unreadable.update(dict.fromkeys(report.unreadable.values()))
            meta = CellMeta(run_id=run_id, created_at=utc_now(), git_sha=git_sha(), package_version=package_version(),
                            model=model.model_id, checkpoint_hash=model.checkpoint_hash,
                            text_hash=model.text_hash, dataset=source.name, data_id=source.data_id,
                            data_source=source.source_text, split=source.split, sample_seed=protocol.sample_seed,
                            sample_ids=ids, attack=spec.name,
                            attack_config=spec.config() | {"seed": protocol.attack_seed, "resolved_protocol": record,
                                                           "search_precision": plan.search_precision,
                                                           "batch_size": report.batch_size},
                            protocol=protocol.name, norm=protocol.norm, settings=plan.settings(), device=str(device),
                            seconds=time.time() - t0, flags=report.flags,
                            white_box_then_square=_square_after_white_box(spec), unreadable=set(report.unreadable),
                            audits=plan.audits())
            cell = _Cell(model, plan, meta)
            # Whoever completes a cell writes its rows: the last shard to finish its part, or a re-run.
            stored = read_samples(request.out)
            if _complete(cell, stored):
                cell.rows = cell_rows(stored, meta)
                upsert_results(request.out, cell.rows)
            cells.append(cell)
    # Cells other shards completed after this one finished its part: their rows for the summary, written again
    # (the same rows, by key) in case the shard that completed a cell was killed before it wrote them.
    samples = read_samples(request.out)
    for cell in cells:
        if cell.rows is None and _complete(cell, samples):
            cell.rows = cell_rows(samples, cell.meta)
            upsert_results(request.out, cell.rows)
    rows = [r for cell in cells for r in cell.rows or []]
    for cell in cells:
        flags += [f"{cell.meta.model} / {cell.meta.dataset}: {f}" for f in _masking_flags(cell.rows or [])]
        where = f"{cell.meta.model} / {cell.meta.dataset}"
        audits += [f"{where} {r['eps_text']}: {audit_line(r, cell.plan.audit_spec.name)}"
                   for r in cell.rows or [] if r.get("audit_n") is not None]
    pending = [f"{cell.meta.model} / {cell.meta.dataset}" for cell in cells if cell.rows is None]
    table = pd.DataFrame(rows)
    summary = summary_table(table) if rows else pd.DataFrame()
    paired = paired_differences(samples, table, loaded[0].model_id, ids_by_dataset) \
        if len(loaded) > 1 and rows else pd.DataFrame()
    pooled = pooled_audit(rows)
    if not pending:  # the summary and paired differences appear once every cell of the grid is complete
        _write_frame(request.out / SUMMARY_FILE, summary)
        if not paired.empty:
            _write_frame(request.out / PAIRED_FILE, paired)
        if pooled is not None:
            _write_frame(request.out / AUDIT_FILE, audit_table(rows, pooled))
    return EvalResult(rows=rows, summary=summary, paired=paired, protocol=protocol,
                      results_path=request.out / RESULTS_FILE, samples_path=request.out / SAMPLES_FILE,
                      computed=computed, reused=reused, flags=flags, unreadable=list(unreadable), shard=shard,
                      pending=pending, audits=audits, pooled_audit=pooled if not pending else None)


@dataclass
class _Cell:
    """One (model, dataset) cell of the grid as this process saw it; ``rows`` once the cell is complete."""

    model: LoadedModel
    plan: CellPlan
    meta: CellMeta
    rows: list[dict] | None = None


def _complete(cell: _Cell, samples: pd.DataFrame) -> bool:
    """Whether every sample of the cell has its outcomes in the store, or cannot be read (then it is added to
    ``cell.meta.unreadable``). A sample another shard has not evaluated yet makes the cell incomplete."""
    missing = {sid: i for sid, i in missing_samples(samples, cell.model, cell.plan).items()
               if sid not in cell.meta.unreadable}
    if not missing:
        return True
    found = unreadable_among(cell.model, cell.plan, missing)
    if found is None:
        return False
    cell.meta.unreadable |= set(found)
    return True


def _masking_flags(rows: list[dict]) -> list[str]:
    """The masking-check flags of a cell's rows, once each (unreadable images and audits are reported apart)."""
    return sorted({f for r in rows for f in r["flags"].split(";")
                   if f and not f.startswith((FLAG_UNREADABLE, FLAG_FAST_MISSED))})


def _square_after_white_box(spec) -> bool:
    kinds = [a.kind for a in spec.attacks]
    return "square" in kinds and any(k != "square" for k in kinds[:kinds.index("square")])


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    from simclip_bench.models.checkpoint import atomic_write_text

    atomic_write_text(path, frame.to_csv(index=False))
