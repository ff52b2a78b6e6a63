"""Zero-shot classification, clean and under attack, one (model, dataset) cell at a time, resumable.

Protocol (as in RobustVLM / AutoAttack): the text classifier is computed once per cell; only
clean-correct samples are attacked (a misclassified sample is not robust); an ensemble is the
worst case per sample; every adversarial example is checked to lie in the eps-ball and the [0,1]
box, and its prediction is recomputed in float32 before it counts.

Per-sample outcomes go to the store a batch at a time; a sample whose (model, dataset, setting,
sample id) key is already there is skipped, so re-running a killed command recomputes at most the
batch it was in. Each sample's attack randomness is seeded by its dataset index, so the resumed
result equals the uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.checks import preflight_checks
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import EnsembleSpec
from simclip_bench.data.classification import ClassificationSource
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.devices import autocast
from simclip_bench.eps import Eps
from simclip_bench.models.spec import LoadedModel
from simclip_bench.results.store import append_samples
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

PREFLIGHT_SAMPLES = 64
TASK = "zeroshot"
CLEAN = "none"


def setting_id(spec: EnsembleSpec, norm: str, eps: Eps | None, seed: int, batch_size: int) -> str:
    """Short hash of what decides a sample's outcome besides model, dataset and sample.

    Our engine is batch-invariant, so the batch size enters only for the reference backend.
    """
    if spec.is_clean:
        payload: dict = {"attack": CLEAN}
    else:
        payload = {"attack": spec.name, "config": spec.config(), "norm": norm, "eps": round(eps.value, 10),
                   "seed": seed}
        if spec.backend == "reference":
            payload["batch_size"] = batch_size
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CellPlan:
    """What to evaluate for one (model, dataset): the fixed sample ``indices``, the attack and eps list."""

    source: ClassificationSource
    indices: list[int]
    spec: EnsembleSpec
    eps: list[Eps]
    norm: str = "linf"
    seed: int = 0
    batch_size: int = 500

    def settings(self) -> dict[str, tuple[EnsembleSpec, Eps | None]]:
        from simclip_bench.attacks.registry import resolve_attack

        clean = resolve_attack(CLEAN)
        out = {setting_id(clean, self.norm, None, self.seed, self.batch_size): (clean, None)}
        if not self.spec.is_clean:
            for eps in self.eps:
                out[setting_id(self.spec, self.norm, eps, self.seed, self.batch_size)] = (self.spec, eps)
        return out


@dataclass
class CellReport:
    """What one cell did: samples computed now vs found in the store, and masking-check flags."""

    computed: int = 0
    reused: int = 0
    flags: list[str] = field(default_factory=list)


def done_keys(samples, loaded: LoadedModel, dataset: str) -> set[tuple[str, str]]:
    """(setting, sample_id) pairs already in the store for this model and dataset."""
    if samples.empty:
        return set()
    mine = samples[(samples["model"] == loaded.model_id) & (samples["checkpoint_hash"] == loaded.checkpoint_hash)
                   & (samples["task"] == TASK) & (samples["dataset"] == dataset)]
    return set(zip(mine["setting"].astype(str), mine["sample_id"].astype(str), strict=True))


def run_cell(loaded: LoadedModel, plan: CellPlan, out_dir, run_id: str, device: torch.device, done: set,
             on_batch: Callable[[int], None] | None = None) -> CellReport:
    """Evaluate one (model, dataset) cell into the store at ``out_dir``, skipping samples in ``done``."""
    source, model = plan.source, loaded.model
    settings = plan.settings()
    ids = [source.sample_id(i) for i in plan.indices]
    report = CellReport()
    transform = pixel_transform(model.clip.visual.preprocess_cfg)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, source.classnames, source.templates)).eval()
    # The masking checks run on the first samples every time, so a resumed run reports the same flags.
    x0, y0 = source.load(plan.indices[:PREFLIGHT_SAMPLES], model.image_size, transform)
    report.flags += preflight_checks(head, x0.to(device), y0.to(device))
    for start in range(0, len(plan.indices), plan.batch_size):
        chunk = plan.indices[start:start + plan.batch_size]
        chunk_ids = ids[start:start + plan.batch_size]
        todo = {s: [j for j, sid in enumerate(chunk_ids) if (s, sid) not in done] for s in settings}
        n_todo = max(len(v) for v in todo.values())
        report.reused += len(chunk) - n_todo
        if n_todo == 0:
            if on_batch:
                on_batch(len(chunk))
            continue
        x, y = source.load(chunk, model.image_size, transform)
        x, y = x.to(device), y.to(device)
        keys = torch.tensor(chunk, dtype=torch.int64)
        clean_pred = predict(head, x, plan.batch_size)
        rows: list[dict] = []
        for setting, (spec, eps) in settings.items():
            positions = todo[setting]
            if not positions:
                continue
            pos = torch.tensor(positions, dtype=torch.long, device=device)
            if spec.is_clean:
                adv_pred, norms, fooled_by = clean_pred[pos], torch.zeros(len(pos)), [""] * len(pos)
            else:
                adv_pred, norms, fooled_by = _attack(spec, head, x[pos], y[pos], keys[pos.cpu()], eps, plan, device)
            rows += _rows(run_id, loaded, source.name, spec.name, setting, plan.norm, eps,
                          [chunk_ids[j] for j in positions], y[pos], clean_pred[pos], adv_pred, norms, fooled_by)
        append_samples(out_dir, rows)
        report.computed += n_todo
        if on_batch:
            on_batch(len(chunk))
    return report


def _attack(spec: EnsembleSpec, head, x, y, keys, eps: Eps, plan: CellPlan, device):
    """Attack the clean-correct samples among ``x``; returns float32 predictions, norms, and who fooled each."""
    if spec.backend == "reference":
        x_adv = run_reference(spec, head, x, y, eps.value, norm=plan.norm, seed=plan.seed,
                              batch_size=plan.batch_size)
        norms = check_perturbation(x_adv, x, eps.value, plan.norm)
        adv_pred = predict(head, x_adv, plan.batch_size)
        clean_ok = predict(head, x, plan.batch_size) == y
        fooled = [spec.name if c and a != t else "" for c, a, t in zip(clean_ok.tolist(), adv_pred.tolist(),
                                                                       y.tolist(), strict=True)]
        return adv_pred, norms, fooled
    outcome = run_ensemble(spec, head, x, y, eps.value, norm=plan.norm, seed=plan.seed, batch_size=plan.batch_size,
                           autocast=lambda: autocast(device), sample_keys=keys)
    return outcome.adv_pred, outcome.norms, outcome.fooled_by


def _rows(run_id, loaded, dataset, attack, setting, norm, eps, sample_ids, labels, clean_pred, adv_pred, norms,
          fooled_by) -> list[dict]:
    labels, clean_pred, adv_pred, norms = labels.tolist(), clean_pred.tolist(), adv_pred.tolist(), norms.tolist()
    return [{"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash, "task": TASK,
             "dataset": dataset, "sample_id": sid, "attack": attack, "setting": setting,
             "norm": norm if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
             "label": lab, "clean_pred": cp, "clean_correct": cp == lab, "adv_pred": ap,
             "adv_correct": cp == lab and ap == lab, "fooled_by": fb, "max_perturbation": mp}
            for sid, lab, cp, ap, mp, fb in zip(sample_ids, labels, clean_pred, adv_pred, norms, fooled_by,
                                                strict=True)]
