"""``--dry-run``: the cost plan of a ``simclip eval`` or ``simclip train`` request, before anything is loaded.

The request is checked as the real run checks it (a bad option gets the same one line), then planned by
:mod:`simclip_bench.plan` for ``plan_device`` (``--plan-device``; default: the kind of device the run would use).
Nothing is downloaded, no weights are read and no dataset is built.
"""
from __future__ import annotations

import os

from simclip_bench.data.vlm_benchmarks import POPE_SPLITS
from simclip_bench.grid import unique_values
from simclip_bench.jobs.vlm_eval import VLM_ATTACKS, VLMEvalRequest, default_encoders
from simclip_bench.jobs.vlm_eval import validate as validate_vlm
from simclip_bench.jobs.vlm_tasks import DEFAULT_N_SAMPLES
from simclip_bench.jobs.zeroshot_eval import EvalRequest, default_models, validate
from simclip_bench.models.builtin import BUILTIN_MODELS
from simclip_bench.plan.cost_plan import CostPlan
from simclip_bench.plan.devices import device_for_run, get_plan_device
from simclip_bench.plan.eval_plan import plan_eval
from simclip_bench.plan.train_plan import plan_train
from simclip_bench.plan.vlm_plan import plan_vlm
from simclip_bench.train.config import TrainConfig


def plan_eval_request(request: EvalRequest, plan_device: str | None = None) -> CostPlan:
    """The plan of the zero-shot evaluation ``request`` on ``plan_device`` (h100, a100, h200, cpu)."""
    protocol = validate(request)
    device = get_plan_device(plan_device or device_for_run(request.device))
    models = unique_values(request.models, BUILTIN_MODELS) or default_models(request.runs_dir)
    return plan_eval(protocol, models, list(request.datasets), request.batch_size, request.precision, device)


def plan_vlm_request(request: VLMEvalRequest, plan_device: str | None = None) -> CostPlan:
    """The plan of the captioning/VQA ``request``: samples as requested (the dataset's default otherwise; at most
    that many, a smaller dataset has fewer), every encoder, every eps."""
    validate_vlm(request)
    device = get_plan_device(plan_device or device_for_run(request.device))
    n = request.n_samples or DEFAULT_N_SAMPLES["shapes" if request.dataset == "shapes" else "files"]
    n *= len(POPE_SPLITS) if request.task == "pope" else 1  # POPE: --n-samples per split, three splits
    encoders = unique_values(request.models, BUILTIN_MODELS) or default_encoders(request)
    protocol = VLM_ATTACKS[request.attack]
    return plan_vlm(request.task, request.vlm, encoders, n, protocol, len(request.eps) if protocol != "none" else 0,
                    request.n_iter, request.batch_size, request.precision, device)


def plan_train_config(cfg: TrainConfig, plan_device: str | None = None) -> CostPlan:
    """The plan of the training run ``cfg`` on ``plan_device``, over ``WORLD_SIZE`` processes (torchrun) or one."""
    device = get_plan_device(plan_device or device_for_run(cfg.device))
    return plan_train(cfg, device, int(os.environ.get("WORLD_SIZE", "1")))
