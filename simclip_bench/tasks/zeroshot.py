"""Zero-shot classification, clean and under attack, as tidy rows.

Protocol (as in RobustVLM / AutoAttack): the text classifier and the clean pass are computed
once; only clean-correct samples are attacked (a misclassified sample is not robust); an
ensemble is the worst case per sample; every adversarial example is checked to lie in the
eps-ball and the [0,1] box, and its prediction is recomputed in float32 before it counts.
Masking checks raise flags that go into the rows.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.checks import accuracy_flags, preflight_checks
from simclip_bench.attacks.ensemble import predict, run_ensemble
from simclip_bench.attacks.reference import run_reference
from simclip_bench.attacks.registry import EnsembleSpec, resolve_attack
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast
from simclip_bench.eps import Eps
from simclip_bench.errors import UserError
from simclip_bench.models.spec import LoadedModel
from simclip_bench.provenance import git_sha, package_version, utc_now
from simclip_bench.results.schema import wilson_interval
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

PREFLIGHT_SAMPLES = 64


@dataclass
class ZeroShotSettings:
    """How to evaluate. ``attack``: a name from :mod:`simclip_bench.attacks.registry` (default ``apgd-ce``);
    ``n_samples``: first N test images (default 1000); ``n_iter``: iterations of each gradient attack
    (default 100); ``batch_size``: working-batch size (default 500); ``seed``: attack seed."""

    attack: str = "apgd-ce"
    eps: Sequence[Eps] = ()
    n_samples: int = 1000
    n_iter: int = 100
    batch_size: int = 500
    seed: int = 0

    def validate(self) -> None:
        spec = self.spec()
        for name, value in (("--n-samples", self.n_samples), ("--batch-size", self.batch_size),
                            ("--iterations", self.n_iter)):
            if value <= 0:
                raise UserError(f"{name} must be a positive integer, got {value}")
        if not spec.is_clean and not self.eps:
            raise UserError("an attack needs at least one --eps, e.g. --eps 4/255")

    def spec(self) -> EnsembleSpec:
        return resolve_attack(self.attack).with_iterations(self.n_iter)


@dataclass
class ZeroShotOutcome:
    rows: list[dict]
    sample_rows: list[dict]
    flags: list[str]


def evaluate_zero_shot(loaded: LoadedModel, dataset: ShapesDataset, settings: ZeroShotSettings,
                       run_id: str, device: torch.device,
                       on_eps_done: Callable[[], None] | None = None) -> ZeroShotOutcome:
    """Clean accuracy plus, for each eps, robust accuracy under the chosen attack or ensemble."""
    settings.validate()
    spec = settings.spec()
    if settings.n_samples > len(dataset):
        raise UserError(f"--n-samples {settings.n_samples} exceeds the {len(dataset)} images of {dataset.name}")
    model = loaded.model
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, dataset.classnames, dataset.templates))
    head.eval()
    x_all, y_all = dataset.tensors(list(range(settings.n_samples)))
    x_all, y_all = x_all.to(device), y_all.to(device)
    n = len(x_all)
    common = {"run_id": run_id, "created_at": utc_now(), "git_sha": git_sha(), "package_version": package_version(),
              "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash, "task": "zeroshot",
              "dataset": dataset.name, "split": dataset.split, "n_samples": n, "sample_seed": dataset.seed,
              "device": str(device)}
    t0 = time.time()
    clean_pred = predict(head, x_all, settings.batch_size)
    clean_correct = clean_pred == y_all
    clean_acc = float(clean_correct.float().mean())
    rows = [_row(common, "none", {}, None, int(clean_correct.sum()), n, time.time() - t0, [])]
    sample_ids = [dataset.sample_id(i) for i in range(n)]
    if spec.is_clean:
        empty = [""] * n
        return ZeroShotOutcome(rows, _sample_rows(loaded, dataset, sample_ids, y_all, clean_pred, clean_pred,
                                                  torch.zeros(n), empty, None, run_id, "none"), [])

    flags = preflight_checks(head, x_all[:PREFLIGHT_SAMPLES], y_all[:PREFLIGHT_SAMPLES])
    sample_rows: list[dict] = []
    adv_rows: list[tuple[Eps, int, float, list[str]]] = []
    for eps in settings.eps:
        t0 = time.time()
        if spec.backend == "reference":
            x_adv = run_reference(spec, head, x_all, y_all, eps.value, seed=settings.seed,
                                  batch_size=settings.batch_size)
            norms = check_perturbation(x_adv, x_all, eps.value)
            adv_pred = predict(head, x_adv, settings.batch_size)
            robust = clean_correct & (adv_pred == y_all)
            fooled_by = [spec.name if c and not r else "" for c, r in zip(clean_correct.tolist(), robust.tolist(),
                                                                          strict=True)]
            eps_flags: list[str] = []
        else:
            outcome = run_ensemble(spec, head, x_all, y_all, eps.value, seed=settings.seed,
                                   batch_size=settings.batch_size, autocast=lambda: autocast(device))
            robust, norms, fooled_by, eps_flags = outcome.robust, outcome.norms, outcome.fooled_by, outcome.flags
            adv_pred = outcome.adv_pred  # already the float32 re-check of every adversarial example
        adv_rows.append((eps, int(robust.sum()), time.time() - t0, eps_flags))
        sample_rows += _sample_rows(loaded, dataset, sample_ids, y_all, clean_pred, adv_pred, norms, fooled_by,
                                    eps, run_id, spec.name)
        if on_eps_done:
            on_eps_done()
    by_eps = accuracy_flags(clean_acc, {eps.value: correct / n for eps, correct, _, _ in adv_rows})
    config = spec.config() | {"seed": settings.seed}
    for eps, correct, seconds, eps_flags in adv_rows:
        row_flags = flags + eps_flags + by_eps[eps.value]
        rows.append(_row(common, spec.name, config, eps, correct, n, seconds, row_flags))
    return ZeroShotOutcome(rows, sample_rows, sorted({f for r in rows for f in r["flags"].split(";") if f}))


def _row(common: dict, attack: str, config: dict, eps: Eps | None, correct: int, n: int, seconds: float,
         flags: list[str]) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {**common, "attack": attack, "attack_config": json.dumps(config, sort_keys=True),
            "norm": "linf" if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
            "metric": "accuracy", "value": correct / n, "ci_low": lo, "ci_high": hi, "seconds": round(seconds, 2),
            "flags": ";".join(flags)}


def _sample_rows(loaded, dataset, sample_ids, labels, clean_pred, adv_pred, norms, fooled_by, eps, run_id, attack):
    labels, clean_pred, adv_pred, norms = labels.tolist(), clean_pred.tolist(), adv_pred.tolist(), norms.tolist()
    return [{"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash,
             "task": "zeroshot", "dataset": dataset.name, "sample_id": sid, "attack": attack,
             "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0", "label": lab,
             "clean_pred": cp, "clean_correct": cp == lab, "adv_pred": ap, "adv_correct": cp == lab and ap == lab,
             "fooled_by": fb, "max_perturbation": mp}
            for sid, lab, cp, ap, mp, fb in zip(sample_ids, labels, clean_pred, adv_pred, norms, fooled_by,
                                                strict=True)]
