"""Zero-shot classification, clean and under attack, as tidy rows.

Protocol (as in RobustVLM / AutoAttack): the text classifier and the clean pass are computed
once; only clean-correct samples are attacked (a misclassified sample is not robust); every
returned adversarial example is checked to lie in the eps-ball and the [0,1] box, and its
prediction is re-computed in float32 before it counts.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simclip_bench.attacks.apgd import apgd_linf
from simclip_bench.attacks.base import ClassifierObjective, check_linf_perturbation
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast
from simclip_bench.eps import Eps
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.models.spec import LoadedModel
from simclip_bench.provenance import git_sha, package_version, utc_now
from simclip_bench.results.schema import wilson_interval
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

ATTACKS = {"apgd": "apgd-ce", "apgd-ce": "apgd-ce", "none": "none"}


@dataclass
class ZeroShotSettings:
    """How to evaluate. ``n_samples``: first N test images (default 1000); ``n_iter``: APGD iterations
    (default 100); ``batch_size``: images per forward pass (default 500); ``seed``: attack seed."""

    attack: str = "apgd"
    eps: Sequence[Eps] = ()
    n_samples: int = 1000
    n_iter: int = 100
    batch_size: int = 500
    seed: int = 0

    def validate(self) -> None:
        self.resolved_attack()
        for name, value in (("--n-samples", self.n_samples), ("--batch-size", self.batch_size),
                            ("--iterations", self.n_iter)):
            if value <= 0:
                raise UserError(f"{name} must be a positive integer, got {value}")
        if self.resolved_attack() != "none" and not self.eps:
            raise UserError("an attack needs at least one --eps, e.g. --eps 4/255")

    def resolved_attack(self) -> str:
        if self.attack not in ATTACKS:
            raise UserError(f"unknown attack {self.attack!r}{did_you_mean(self.attack, ATTACKS)}; "
                            f"choose one of {', '.join(ATTACKS)}")
        return ATTACKS[self.attack]


@dataclass
class ZeroShotOutcome:
    rows: list[dict]
    sample_rows: list[dict]


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def _predict(head: ZeroShotClassifier, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([head(x[s]).argmax(-1) for s in _batches(len(x), batch_size)])


def evaluate_zero_shot(loaded: LoadedModel, dataset: ShapesDataset, settings: ZeroShotSettings,
                       run_id: str, device: torch.device,
                       on_batch: Callable[[int], None] | None = None) -> ZeroShotOutcome:
    """Clean accuracy plus, for each eps, robust accuracy under the chosen attack."""
    settings.validate()
    attack = settings.resolved_attack()
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
              "device": str(device), "flags": ""}
    t0 = time.time()
    clean_pred = _predict(head, x_all, settings.batch_size)
    clean_correct = clean_pred == y_all
    rows = [_row(common, "none", {}, None, int(clean_correct.sum()), n, time.time() - t0)]
    sample_rows: list[dict] = []
    sample_ids = [dataset.sample_id(i) for i in range(n)]
    if attack == "none":
        sample_rows += _sample_rows(loaded, dataset, sample_ids, y_all, clean_pred, clean_pred,
                                    torch.zeros(n), None, run_id, "none")
        return ZeroShotOutcome(rows, sample_rows)

    config = {"n_iter": settings.n_iter, "restarts": 1, "loss": "ce", "seed": settings.seed}
    for eps in settings.eps:
        t0 = time.time()
        adv_pred = clean_pred.clone()
        max_pert = torch.zeros(n, device=device)
        todo = torch.nonzero(clean_correct).flatten()
        for b, s in enumerate(_batches(len(todo), settings.batch_size)):
            idx = todo[s]
            x, y = x_all[idx], y_all[idx]
            gen = torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + b)
            with autocast(device):
                result = apgd_linf(ClassifierObjective(head, y), x, eps.value, n_iter=settings.n_iter, generator=gen)
            max_pert[idx] = check_linf_perturbation(result.x_adv, x, eps.value)
            adv_pred[idx] = _predict(head, result.x_adv, settings.batch_size)  # float32 re-check
            if on_batch:
                on_batch(len(idx))
        adv_correct = adv_pred == y_all
        rows.append(_row(common, attack, config, eps, int(adv_correct.sum()), n, time.time() - t0))
        sample_rows += _sample_rows(loaded, dataset, sample_ids, y_all, clean_pred, adv_pred, max_pert, eps,
                                    run_id, attack)
    return ZeroShotOutcome(rows, sample_rows)


def _row(common: dict, attack: str, config: dict, eps: Eps | None, correct: int, n: int, seconds: float) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {**common, "attack": attack, "attack_config": json.dumps(config, sort_keys=True),
            "norm": "linf" if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
            "metric": "accuracy", "value": correct / n, "ci_low": lo, "ci_high": hi, "seconds": round(seconds, 2)}


def _sample_rows(loaded, dataset, sample_ids, labels, clean_pred, adv_pred, max_pert, eps, run_id, attack):
    labels, clean_pred, adv_pred = labels.tolist(), clean_pred.tolist(), adv_pred.tolist()
    max_pert = max_pert.tolist()
    return [{"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash,
             "task": "zeroshot", "dataset": dataset.name, "sample_id": sid, "attack": attack,
             "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0", "label": lab,
             "clean_pred": cp, "clean_correct": cp == lab, "adv_pred": ap, "adv_correct": ap == lab,
             "max_perturbation": mp}
            for sid, lab, cp, ap, mp in zip(sample_ids, labels, clean_pred, adv_pred, max_pert, strict=True)]
