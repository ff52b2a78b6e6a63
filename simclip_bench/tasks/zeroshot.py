"""Zero-shot classification, clean and under attack, one (model, dataset) cell at a time, resumable.

Protocol (as in RobustVLM / AutoAttack): the text classifier is computed once per cell; only
clean-correct samples are attacked (a misclassified sample is not robust); an ensemble is the
worst case per sample; every adversarial example is checked to lie in the eps-ball and the [0,1]
box, and its prediction is recomputed in float32 before it counts. The search runs at the plan's
``precision`` (bf16 autocast on CUDA by default); a success found there leaves the search only once
float32 confirms it (:mod:`simclip_bench.attacks.apgd`).

Per-sample outcomes go to the store a batch at a time; a sample whose key (model and text tower,
dataset identity, setting, sample id: :mod:`simclip_bench.results.identity`) is already there is skipped,
so re-running a killed command recomputes at most the batch it was in. Each sample's attack randomness is
seeded by its dataset index, so the resumed result equals the uninterrupted one.

A sample whose image cannot be read keeps its place in the fixed subset but gets no row: it is
reported, left out of every accuracy (the rows' ``n_samples`` counts only the evaluated samples) and
tried again on the next run. Fixing the file changes the folder's contents, and so its ``data_id``: the
re-run measures every sample of the data as it now is and replaces the table row.

Every sample row carries its gradient evaluations (``grad_evals``; for the reference backend the cell's
mean). A plan with an audit (``--protocol fast``) also runs the full attack on its audited samples and
stores their rows under the full attack's own setting, as a full-protocol run would.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.checks import preflight_checks
from simclip_bench.attacks.cost import CountedModule
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.eps import Eps
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import EnsembleSpec
from simclip_bench.data.classification import ClassificationSource, ImageBatch
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.unreadable import DEFAULT_ON_ERROR, FAIL, unreadable_error
from simclip_bench.devices import autocast_for
from simclip_bench.errors import UserError
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.models.spec import LoadedModel
from simclip_bench.results.store import append_samples
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier
from simclip_bench.tasks.zeroshot_rows import done_keys, sample_rows

PREFLIGHT_SAMPLES = 64
REFERENCE_BATCH_FIXED = ("the reference backend draws its randomness per batch, so its results depend on --batch-size "
                         "(part of their stored setting) and its batches are never split: run again with a lower "
                         "--batch-size")
CLEAN = "none"


def setting_id(spec: EnsembleSpec, norm: str, eps: Eps | None, seed: int, batch_size: int,
               precision: str = "fp32") -> str:
    """Short hash of what decides a sample's outcome besides model, dataset and sample.

    Our engine is batch-invariant, so the batch size enters only for the reference backend. The search
    precision enters when it is not float32 (so float32 settings keep the ids they always had); the
    reference backend always runs in float32.
    """
    if spec.is_clean:
        payload: dict = {"attack": CLEAN}
    else:
        payload = {"attack": spec.name, "config": spec.config(), "norm": norm, "eps": round(eps.value, 10),
                   "seed": seed}
        if spec.backend == "reference":
            payload["batch_size"] = batch_size
        elif precision != "fp32":
            payload["precision"] = precision
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CellPlan:
    """What to evaluate for one (model, dataset): the fixed sample ``indices``, the attack and eps list, the
    search ``precision`` (resolved: fp32 or bf16), and what an unreadable image does (``on_error``: skip
    or fail, see :mod:`simclip_bench.data.unreadable`)."""

    source: ClassificationSource
    indices: list[int]
    spec: EnsembleSpec
    eps: list[Eps]
    norm: str = "linf"
    seed: int = 0
    batch_size: int = 500
    on_error: str = DEFAULT_ON_ERROR
    precision: str = "fp32"
    audit_spec: EnsembleSpec | None = None  # the full attack run on the audited samples
    audit_positions: list[int] = field(default_factory=list)  # positions into ``indices``
    # The part of ``indices`` this process evaluates (a shard of a scaled-out run); None is all of them.
    part: list[int] | None = None

    @property
    def own(self) -> list[int]:
        """The indices this process evaluates: ``part``, or every one of ``indices``."""
        return list(self.indices) if self.part is None else list(self.part)

    @property
    def search_precision(self) -> str:
        """What the attack search really ran in: the reference backend is always float32."""
        return "fp32" if self.spec.backend == "reference" else self.precision

    def settings(self) -> dict[str, tuple[EnsembleSpec, Eps | None]]:
        from simclip_bench.attacks.registry import resolve_attack

        clean = resolve_attack(CLEAN)
        out = {setting_id(clean, self.norm, None, self.seed, self.batch_size): (clean, None)}
        if not self.spec.is_clean:
            for eps in self.eps:
                out[setting_id(self.spec, self.norm, eps, self.seed, self.batch_size, self.search_precision)] = \
                    (self.spec, eps)
        return out

    def audits(self) -> dict[str, str]:
        """Setting of each attacked eps -> the setting of the full attack auditing it (empty without an audit)."""
        if self.audit_spec is None or not self.audit_positions or self.spec.is_clean:
            return {}
        return {setting_id(self.spec, self.norm, eps, self.seed, self.batch_size, self.search_precision):
                setting_id(self.audit_spec, self.norm, eps, self.seed, self.batch_size, self.precision)
                for eps in self.eps}

    def audit_settings(self) -> dict[str, tuple[EnsembleSpec, Eps]]:
        by_setting = {s: eps for s, (_, eps) in self.settings().items()}
        return {full: (self.audit_spec, by_setting[fast]) for fast, full in self.audits().items()}


@dataclass
class CellReport:
    """What one cell did: samples computed now vs found in the store, masking-check flags, and the samples
    left out because their image could not be read (sample id -> one line naming the file and why)."""

    computed: int = 0
    reused: int = 0
    flags: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None  # the working batch that ran the last samples (after any halving)


def run_cell(loaded: LoadedModel, plan: CellPlan, out_dir, run_id: str, device: torch.device, done: set,
             on_batch: Callable[[int], None] | None = None,
             on_status: Callable[[str], None] | None = None,
             chunks: Iterable[list[int]] | None = None,
             notify: Callable[[str], None] | None = None) -> CellReport:
    """Evaluate one (model, dataset) cell into the store at ``out_dir``, skipping samples in ``done``.

    Only ``plan.own`` is evaluated (a shard's part), in batches of ``plan.batch_size``, or the batches that
    ``chunks`` yields (dataset indices; claimed from the store as they are asked for, see
    :mod:`simclip_bench.jobs.claims`). The masking checks run on the first samples of the whole cell, so every
    shard reports the flags of a single process.

    An image that cannot be read is left out and listed in the report (``plan.on_error`` ``skip``) or
    stops the cell with a UserError naming the file (``fail``); the other samples keep their place.
    After each batch ``on_batch`` gets its size and ``on_status`` the accuracies so far, clean and per eps,
    over the samples computed in this call (e.g. ``clean 89.2%, 4/255 robust 10.4% (of 500)``).

    ``plan.batch_size`` is the unit of resume and the first working batch: a batch that runs out of memory runs
    again at half the size (:mod:`simclip_bench.memory.adaptive_batch`, ``notify`` hears of it), which changes
    no outcome; the reference backend's batches are never split (its results depend on them): it stops instead.
    """
    source, model = plan.source, loaded.model
    settings = plan.settings()
    ids = [source.sample_id(i) for i in plan.indices]
    audited = {ids[j] for j in plan.audit_positions}
    # the full attack's settings on the audited samples only (a fast setting equal to its audit runs once)
    audit_settings = {s: v for s, v in plan.audit_settings().items() if s not in settings}
    every_setting = settings | audit_settings
    only = dict.fromkeys(audit_settings, audited)
    report = CellReport()
    tally: dict[str, tuple[int, int]] = {}  # setting -> (correct, computed) in this call
    transform = pixel_transform(model.clip.visual.preprocess_cfg)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, source.classnames, source.templates)).eval()
    # The masking checks run on the first samples every time, so a resumed run reports the same flags.
    first = _load(plan, plan.indices[:PREFLIGHT_SAMPLES], ids[:PREFLIGHT_SAMPLES], model.image_size, transform,
                  report)
    fixed = REFERENCE_BATCH_FIXED if any(spec.backend == "reference" for spec, _ in settings.values()) else None
    batch = AdaptiveBatch(plan.batch_size, "zero-shot attack batch", fixed=fixed, notify=notify)
    checks = AdaptiveBatch(min(plan.batch_size, PREFLIGHT_SAMPLES), "masking-check batch", notify=notify) \
        if fixed else batch
    if first.kept:
        fx, fy = first.x.to(device), first.y.to(device)
        report.flags += checks.run(lambda size: preflight_checks(head, fx, fy, batch_size=size))
    own_ids: list[str] = []
    for chunk in (chunks if chunks is not None else _batches(plan.own, plan.batch_size)):
        chunk_ids = [source.sample_id(i) for i in chunk]
        own_ids += chunk_ids
        size = len(chunk)
        n_todo = max(len(v) for v in _todo(every_setting, chunk_ids, done, only).values())
        report.reused += size - max(len(v) for v in _todo(settings, chunk_ids, done).values())
        if n_todo:
            images = _load(plan, chunk, chunk_ids, model.image_size, transform, report)
            chunk, chunk_ids = [chunk[j] for j in images.kept], [chunk_ids[j] for j in images.kept]
            todo = _todo(every_setting, chunk_ids, done, only)
            if chunk:
                rows = batch.run(lambda size, images=images, chunk=chunk, chunk_ids=chunk_ids, todo=todo: _outcomes(
                    loaded, replace(plan, batch_size=size), head, every_setting, images, chunk, chunk_ids, todo, run_id,
                    device))
                append_samples(out_dir, rows)
                report.computed += max(len(todo[s]) for s in settings)
                for r in rows:
                    if r["setting"] not in settings:
                        continue
                    right, n = tally.get(r["setting"], (0, 0))
                    tally[r["setting"]] = (right + bool(r["adv_correct"]), n + 1)
        if on_status and tally:
            on_status(_status(settings, tally))
        if on_batch:
            on_batch(size)
    if own_ids and set(own_ids) <= set(report.unreadable):
        raise UserError(f"none of the {len(own_ids)} images of {source.name} could be read, e.g. "
                        f"{next(iter(report.unreadable.values()))}")
    report.batch_size = batch.size
    return report


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _status(settings: dict, tally: dict[str, tuple[int, int]]) -> str:
    """``clean 89.2%, 4/255 robust 10.4% (of 500)``: the accuracies over the samples computed so far."""
    parts = []
    for setting, (_, eps) in settings.items():
        if setting in tally:
            right, n = tally[setting]
            parts.append(f"{'clean' if eps is None else f'{eps.text} robust'} {100 * right / n:.1f}%")
    return f"{', '.join(parts)} (of {max(n for _, n in tally.values())})"


def _todo(settings: dict, sample_ids: list[str], done: set, only: dict[str, set[str]] | None = None
          ) -> dict[str, list[int]]:
    """Per setting, the positions in ``sample_ids`` not yet in the store (among ``only[setting]`` when given)."""
    only = only or {}
    return {s: [j for j, sid in enumerate(sample_ids)
                if (s, sid) not in done and (s not in only or sid in only[s])] for s in settings}


def _load(plan: CellPlan, indices: list[int], sample_ids: list[str], image_size: int, transform,
          report: CellReport) -> ImageBatch:
    """The readable images of ``indices``; each unreadable one goes into ``report`` (skip) or is raised (fail)."""
    batch = plan.source.load_readable(indices, image_size, transform)
    for position, reason in batch.unreadable.items():
        if plan.on_error == FAIL:
            raise unreadable_error("image", reason)
        report.unreadable[sample_ids[position]] = reason
    return batch


def _outcomes(loaded: LoadedModel, plan: CellPlan, head, settings: dict, batch: ImageBatch, chunk: list[int],
              chunk_ids: list[str], todo: dict[str, list[int]], run_id: str, device: torch.device) -> list[dict]:
    """Per-sample rows of every setting still to do for the readable images ``batch`` of ``chunk``."""
    x, y = batch.x.to(device), batch.y.to(device)
    keys = torch.tensor(chunk, dtype=torch.int64)
    clean_pred = predict(head, x, plan.batch_size)
    rows: list[dict] = []
    attack_progress.batch(len(chunk), [e.text for k, (_, e) in settings.items() if todo[k] and e])
    for setting, (spec, eps) in settings.items():
        positions = todo[setting]
        if not positions:
            continue
        attack_progress.setting(eps.text if eps else "")
        pos = torch.tensor(positions, dtype=torch.long, device=device)
        if spec.is_clean:
            adv_pred, norms, fooled_by = clean_pred[pos], torch.zeros(len(pos)), [""] * len(pos)
            grad_evals = torch.zeros(len(pos))
        else:
            adv_pred, norms, fooled_by, grad_evals = _attack(spec, head, x[pos], y[pos], keys[pos.cpu()], eps, plan,
                                                             device)
        rows += sample_rows(run_id, loaded, plan.source, spec.name, setting, plan.norm, eps,
                      [chunk_ids[j] for j in positions], y[pos], clean_pred[pos], adv_pred, norms, fooled_by,
                      grad_evals)
    return rows


def _attack(spec: EnsembleSpec, head, x, y, keys, eps: Eps, plan: CellPlan, device):
    """Attack the clean-correct samples among ``x``; returns float32 predictions, norms, who fooled each, and
    the gradient evaluations of each (the reference backend's: its total spread evenly)."""
    if spec.backend == "reference":
        counted = CountedModule(head)
        x_adv = run_reference(spec, counted, x, y, eps.value, norm=plan.norm, seed=plan.seed,
                              batch_size=plan.batch_size)
        norms = check_perturbation(x_adv, x, eps.value, plan.norm)
        adv_pred = predict(head, x_adv, plan.batch_size)
        clean_ok = predict(head, x, plan.batch_size) == y
        fooled = [spec.name if c and a != t else "" for c, a, t in zip(clean_ok.tolist(), adv_pred.tolist(),
                                                                       y.tolist(), strict=True)]
        return adv_pred, norms, fooled, torch.full((len(x),), counted.gradient_samples / len(x))
    outcome = run_ensemble(spec, head, x, y, eps.value, norm=plan.norm, seed=plan.seed, batch_size=plan.batch_size,
                           autocast=lambda: autocast_for(plan.precision, device), sample_keys=keys)
    return outcome.adv_pred, outcome.norms, outcome.fooled_by, outcome.grad_evals


def missing_samples(samples, loaded: LoadedModel, plan: CellPlan) -> dict[str, int]:
    """The cell's samples (id -> dataset index) that lack an outcome for some setting in the store ``samples``,
    the audit's settings included for the audited samples."""
    settings, audit_settings = plan.settings(), plan.audit_settings()
    audited = {plan.source.sample_id(plan.indices[j]) for j in plan.audit_positions}
    done = done_keys(samples, loaded, plan.source)

    def lacks(sid: str) -> bool:
        return any((s, sid) not in done for s in settings) or \
            (sid in audited and any((s, sid) not in done for s in audit_settings))

    return {plan.source.sample_id(i): i for i in plan.indices if lacks(plan.source.sample_id(i))}


def unreadable_among(loaded: LoadedModel, plan: CellPlan, missing: dict[str, int]) -> dict[str, str] | None:
    """Why each of ``missing`` (id -> index) cannot be read, or None as soon as one can be read (then it is
    missing because some process has not evaluated it yet). Reads one image at a time: a shard that finishes
    early stops at the first sample another shard still owes."""
    transform = pixel_transform(loaded.model.clip.visual.preprocess_cfg)
    reasons: dict[str, str] = {}
    for sample_id, index in missing.items():
        batch = plan.source.load_readable([index], loaded.model.image_size, transform)
        if batch.kept:
            return None
        reasons[sample_id] = next(iter(batch.unreadable.values()))
    return reasons
