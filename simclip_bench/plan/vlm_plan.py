"""The cost plan of ``simclip eval --task captioning|vqa``: RobustVLM's ensemble runs, counted per sample.

Worst case per sample (:mod:`simclip_bench.tasks.vlm_attack`): every run of the protocol runs its whole budget,
``1 + n_iter`` gradient evaluations through the VLM (APGD's start point, then one per iteration): the
ensemble's runs on the first ``max_references`` ground truths (5), the float32 run from the best point, and for
VQA the two targeted runs ("Maybe", "Word"): 6 x 101 = 606 for captioning, 8 x 101 = 808 for VQA at 100
iterations; ``single`` is one run. A sample stops early once its score falls below the threshold, and a VQA
sample with fewer than 5 distinct answers has fewer runs, so real runs cost less. Every run ends in one
generation (``max_new_tokens`` greedy steps) per sample, after the clean one.

FLOPs per gradient evaluation and per generation are counted on the VLM itself: the built-in tiny VLM is small
enough to count on the CPU with its shipped weights; for ``llava:<model>`` the language model is built from the
``config.json`` of its local folder or of the Hugging Face cache on the meta device (no weights), its forward and
input-gradient backward counted over the image tokens and a 48-token prompt and answer, plus the swapped vision
tower's gradient evaluation (:mod:`.model_cost`). Without the config (offline, not cached) the count is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from simclip_bench.errors import UserError
from simclip_bench.plan.architecture import planned_architecture
from simclip_bench.plan.cost_plan import CostPlan, MemoryEstimate, PlanRow, chunks
from simclip_bench.plan.devices import PlanDevice
from simclip_bench.plan.model_cost import _count, model_cost

TEXT_TOKENS = 48  # prompt and answer around the image tokens (LLaVA-1.5's caption prompt is about 30)
MAX_NEW_TOKENS = 20
VQA_TARGETS = 2
ONE_REFERENCE_TASKS = ("pope", "scienceqa")  # one ground truth: the label, the right option
NATIVE_LLAVA_TOWER = "ViT-L-14-336-quickgelu"


@dataclass(frozen=True)
class VLMCost:
    """Per image: FLOPs of one gradient evaluation through the VLM and of one generation, and their source."""

    grad_flops: float
    generate_flops: float
    source: str


def vlm_runs(task: str, protocol: str, max_references: int = 5) -> int:
    """The APGD runs per sample of ``protocol`` (ensemble | single | none) on ``task`` in the worst case."""
    if protocol == "none":
        return 0
    if protocol == "single":
        return 1
    references = 1 if task in ONE_REFERENCE_TASKS else max_references
    return references + 1 + (VQA_TARGETS if task == "vqa" else 0)


def _tiny_cost() -> VLMCost:
    from simclip_bench.vlm.load import load_vlm

    vlm = load_vlm("tiny-vlm", "tiny-clip", "cpu").vlm
    x = torch.rand(1, 3, vlm.image_size, vlm.image_size, requires_grad=True)

    def grad():
        torch.autograd.grad(vlm.loss(x, [vlm.caption_prompt()], ["a red circle on a blue background"]).sum(), [x])

    grad_flops = _count(grad)
    generate_flops = _count(lambda: vlm.generate(x.detach(), [vlm.caption_prompt()], MAX_NEW_TOKENS))
    return VLMCost(float(grad_flops), float(generate_flops), "counted on the built-in tiny VLM")


def _llava_config(model_id: str) -> dict:
    folder = Path(model_id).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if not isinstance(cached, str):
        raise UserError(f"cannot plan llava:{model_id} offline: its config.json is neither a local folder's nor in "
                        "the Hugging Face cache; pass the folder (--vlm llava:DIR)")
    return json.loads(Path(cached).read_text())


def _llava_cost(model_id: str, encoder: str) -> VLMCost:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _llava_config(model_id)
    text = dict(config["text_config"])
    text_config = AutoConfig.for_model(text.pop("model_type", "llama"), **text)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
    lm.requires_grad_(False)
    arch = NATIVE_LLAVA_TOWER if encoder == "native" else planned_architecture(encoder).config
    vision = model_cost(arch)
    patch = int(config.get("vision_config", {}).get("patch_size", 14))
    tokens = (vision.image_size // patch) ** 2 + TEXT_TOKENS
    embeds = torch.zeros(1, tokens, text_config.hidden_size, device="meta", requires_grad=True)

    def grad():
        torch.autograd.grad(lm(inputs_embeds=embeds).logits.float().sum(), [embeds])

    def forward():
        with torch.no_grad():
            lm(inputs_embeds=embeds.detach())

    params = sum(p.numel() for p in lm.parameters())
    generate = _count(forward) + MAX_NEW_TOKENS * 2 * params + vision.forward_flops
    return VLMCost(float(_count(grad) + vision.grad_flops), float(generate),
                   f"language model counted on the meta device from llava:{model_id}'s config.json, "
                   f"{tokens} tokens; vision tower {arch}")


def plan_vlm(task: str, vlm: str, encoders: list[str], n_samples: int, protocol: str, n_eps: int, n_iter: int,
             batch_size: int, precision: str, device: PlanDevice) -> CostPlan:
    """The plan of one VLM task with ``encoders`` swapped in, ``n_samples`` samples and ``n_eps`` eps."""
    if vlm.startswith("openflamingo:"):
        raise UserError("--dry-run plans the tiny VLM and LLaVA; OpenFlamingo's cost is not modelled yet (its "
                        "ensemble runs are counted as for LLaVA: 6 per sample for captioning, 8 for VQA)")
    search = ("fp32" if device.name == "cpu" else "bf16") if precision == "auto" else precision
    runs = vlm_runs(task, protocol)
    per_sample = runs * (1 + n_iter)
    rows = []
    for encoder in encoders:
        cost = _llava_cost(vlm[len("llava:"):].strip(), encoder) if vlm.startswith("llava:") else _tiny_cost()
        grads = n_samples * n_eps * per_sample
        generations = n_samples * (1 + n_eps * runs)
        calls = n_eps * runs * chunks(n_samples, batch_size) * (1 + n_iter)
        seconds = (device.seconds(grads * cost.grad_flops, calls, search)
                   + device.seconds(generations * cost.generate_flops, generations * MAX_NEW_TOKENS / batch_size,
                                    "fp32"))
        rows.append(PlanRow(encoder, vlm, task, n_samples, f"apgd-{protocol} x {n_eps} eps", per_sample, grads,
                            generations, grads * cost.grad_flops + generations * cost.generate_flops, seconds,
                            f"{runs} runs x {1 + n_iter} per sample; {cost.source}"))
    return CostPlan("vlm", device, search, batch_size, rows, MemoryEstimate(0, 0, "not estimated for VLMs"),
                    device.setup_seconds, [f"{task}: {runs} APGD runs per sample in the worst case "
                                           "(RobustVLM's ensemble; fewer where a score falls below the threshold)"])
