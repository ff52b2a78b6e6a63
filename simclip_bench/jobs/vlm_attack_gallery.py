"""``simclip attack --vlm``: attack a VLM's captions and save pictures with the caption before and after.

Untargeted (default): APGD (RobustVLM's VLM settings: from the clean image, first step 1·eps, 100
iterations) maximises the language-model loss of the image's first reference caption (built-in test
images) or of the model's own clean caption (image files). Targeted (``--target TEXT``): RobustVLM's
targeted attack, APGD minimising the loss of TEXT, 10 000 iterations in float32 by default; success = TEXT
appears in the caption (:func:`simclip_bench.tasks.vlm_attack.targeted_string_attack`).
For each image it writes ``<name>_adv.png`` and ``<name>_panel.png``: original | perturbation (amplified)
| adversarial, with the clean and the adversarial caption underneath.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from simclip_bench.attacks.base import check_perturbation
from simclip_bench.attacks.eps import Eps
from simclip_bench.data.vlm_samples import load_image, shapes_captioning
from simclip_bench.devices import autocast_for, check_precision, resolve_device, resolve_precision
from simclip_bench.errors import UserError
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.tasks.lm_objective import LanguageModelObjective
from simclip_bench.tasks.vlm_attack import TARGETED_STRING_ITERATIONS, targeted_string_attack, vlm_apgd
from simclip_bench.vlm.load import load_vlm

ATTACK_BATCH = 64  # the working batch of generation and APGD; halved when it runs out of memory


@dataclass
class VLMAttackRequest:
    vlm: str = "tiny-vlm"
    model: str = "tiny-clip"
    images: list[Path] = field(default_factory=list)
    n_images: int = 8
    eps: Eps | None = None
    n_iter: int | None = None  # default: 100 untargeted, 10 000 targeted (RobustVLM)
    target: str | None = None
    seed: int = 0
    out: Path = Path("attacks-out")
    device: str = "auto"
    allow_unsafe_pickle: bool = False  # full unpickling of pickled encoder weights (see load_model)
    # Search dtype: auto = bf16 on CUDA untargeted, fp32 targeted (RobustVLM) and on a CPU.
    precision: str = "auto"

    @property
    def iterations(self) -> int:
        if self.n_iter is not None:
            return self.n_iter
        return TARGETED_STRING_ITERATIONS if self.target is not None else 100


@dataclass
class AttackedCaption:
    name: str
    clean_caption: str
    adv_caption: str
    target_reached: bool | None
    max_perturbation: float
    adv_path: Path
    panel_path: Path


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8))


def caption_panel(x: torch.Tensor, x_adv: torch.Tensor, eps: float, before: str, after: str,
                  tile: int = 192) -> Image.Image:
    """Original | perturbation (-eps black, +eps white) | adversarial, with both captions underneath."""
    delta = (x_adv - x) / (2 * eps) + 0.5
    tiles = [_to_pil(t).resize((tile, tile), Image.NEAREST) for t in (x, delta, x_adv)]
    pad = 8
    width = 3 * tile + 4 * pad
    lines = textwrap.wrap(f"clean: {before}", 90) + textwrap.wrap(f"adversarial: {after}", 90)
    canvas = Image.new("RGB", (width, tile + 2 * pad + 14 * len(lines) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, t in enumerate(tiles):
        canvas.paste(t, (pad + i * (tile + pad), pad))
    for k, line in enumerate(lines):
        draw.text((pad, tile + 2 * pad + 14 * k), line, fill="black")
    return canvas


def run_vlm_attack_gallery(request: VLMAttackRequest) -> list[AttackedCaption]:
    """Attack each image's caption (see module docstring) and save the pictures."""
    if request.eps is None:
        raise UserError("--eps is required")
    if request.n_images <= 0 or request.iterations <= 0:
        raise UserError("--n-images and --iterations must be positive integers")
    check_precision(request.precision)
    if request.target is not None and not request.target.strip():
        raise UserError("--target must be a non-empty text")
    device = resolve_device(request.device)
    precision = resolve_precision(request.precision, device, cuda_default="fp32" if request.target else "bf16")
    vlm = load_vlm(request.vlm, request.model, device, request.allow_unsafe_pickle).vlm
    if request.images:
        x = torch.stack([load_image(p, vlm.image_size) for p in request.images])
        names = [p.stem for p in request.images]
        references = None
    else:
        data = shapes_captioning(request.n_images)
        x = data.images(vlm.image_size)
        names = [s.sample_id.replace("/", "_") for s in data.samples]
        references = [s.references[0] for s in data.samples]
    x = x.to(device)
    prompts = [vlm.caption_prompt()] * len(x)
    batch = AdaptiveBatch(ATTACK_BATCH, "VLM attack batch")

    def captions(images: torch.Tensor) -> list[str]:
        parts = batch.map_chunks(len(images), lambda p: vlm.generate(images[p], prompts[p]))
        return [text for part in parts for text in part]

    clean = captions(x)
    if request.target is not None:
        x_adv, adv, reached = targeted_string_attack(vlm, x, prompts, request.target, request.eps.value,
                                                     n_iter=request.iterations, seed=request.seed,
                                                     precision=precision, batch=batch)
        hits: list[bool | None] = list(reached)
    else:
        objective = LanguageModelObjective(vlm, prompts, references or clean)

        def attack(size: int) -> torch.Tensor:
            with autocast_for(precision, device):
                return vlm_apgd(request.eps.value, request.iterations, size, request.seed).run(
                    objective, x, torch.arange(len(x), device=device)).x_adv

        x_adv = batch.run(attack)
        adv = captions(x_adv)
        hits = [None] * len(x)
    norms = check_perturbation(x_adv, x, request.eps.value)
    request.out.mkdir(parents=True, exist_ok=True)
    items = []
    for i, name in enumerate(names):
        adv_path, panel_path = request.out / f"{name}_adv.png", request.out / f"{name}_panel.png"
        _to_pil(x_adv[i]).save(adv_path)
        caption_panel(x[i], x_adv[i], request.eps.value, clean[i], adv[i]).save(panel_path)
        items.append(AttackedCaption(name, clean[i], adv[i], hits[i], float(norms[i]), adv_path, panel_path))
    return items
