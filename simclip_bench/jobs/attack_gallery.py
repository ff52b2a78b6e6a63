"""``simclip attack``: craft adversarial examples and save them as pictures people can look at.

For each image it writes ``<name>_adv.png`` (the adversarial image, lossless, at the model's
resolution) and ``<name>_panel.png``: original | perturbation (amplified to fill [0,1]) |
adversarial, with the prediction and its probability before and after.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from simclip_bench.attacks.apgd import apgd_attack
from simclip_bench.attacks.base import ClassifierObjective, check_perturbation
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast_for, check_precision, resolve_device, resolve_precision
from simclip_bench.eps import Eps
from simclip_bench.errors import UserError
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

PANEL_SCALE = 6  # nearest-neighbour upscaling so 32-px images are visible


@dataclass
class AttackRequest:
    model: str = "tiny-clip"
    images: list[Path] = field(default_factory=list)
    n_images: int = 8
    eps: Eps | None = None
    n_iter: int = 100
    seed: int = 0
    out: Path = Path("attacks-out")
    device: str = "auto"
    allow_unsafe_pickle: bool = False  # full unpickling of pickled model weights (see load_model)
    precision: str = "auto"  # search dtype (auto: bf16 on CUDA, fp32 on a CPU); success is confirmed in fp32


@dataclass
class AttackedImage:
    name: str
    true_label: str | None
    clean_label: str
    clean_prob: float
    adv_label: str
    adv_prob: float
    max_perturbation: float
    adv_path: Path
    panel_path: Path


def load_image_file(path: Path, size: int) -> torch.Tensor:
    """An image file as (3, size, size) in [0,1]: shorter side resized to ``size``, centre-cropped."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError(f"--image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"--image {path}: not a readable image ({e.__class__.__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def _to_pil(x: torch.Tensor) -> Image.Image:
    arr = (x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(arr)


def _panel(x: torch.Tensor, x_adv: torch.Tensor, eps: float, before: str, after: str) -> Image.Image:
    delta = (x_adv - x) / (2 * eps) + 0.5  # -eps -> black, 0 -> grey, +eps -> white
    tiles = [_to_pil(t) for t in (x, delta, x_adv)]
    side = tiles[0].width * PANEL_SCALE
    pad, text_h = 8, 34
    canvas = Image.new("RGB", (3 * side + 4 * pad, side + 2 * pad + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    captions = (f"clean: {before}", f"perturbation x{0.5 / eps:.0f}", f"adversarial: {after}")
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        left = pad + i * (side + pad)
        canvas.paste(tile.resize((side, side), Image.NEAREST), (left, pad))
        draw.text((left, side + pad + 6), caption, fill="black")
    return canvas


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def run_attack_gallery(request: AttackRequest) -> list[AttackedImage]:
    """Attack each image with APGD-CE against the zero-shot classifier of the built-in class names."""
    if request.eps is None:
        raise UserError("--eps is required")
    if request.n_images <= 0 or request.n_iter <= 0:
        raise UserError("--n-images and --iterations must be positive integers")
    check_precision(request.precision)
    device = resolve_device(request.device)
    loaded = load_model(request.model, device, request.allow_unsafe_pickle)
    model = loaded.model
    dataset = ShapesDataset("test", image_size=model.image_size)
    if request.images:
        x = torch.stack([load_image_file(p, model.image_size) for p in request.images])
        names = [_safe_name(p.stem) for p in request.images]
        labels = None
    else:
        if request.n_images > len(dataset):
            raise UserError(f"--n-images {request.n_images} exceeds the {len(dataset)} test images")
        x, labels = dataset.tensors(list(range(request.n_images)))
        names = [_safe_name(dataset.sample_id(i)) for i in range(request.n_images)]
    x = x.to(device)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, dataset.classnames, dataset.templates)).eval()
    with torch.no_grad():
        clean_probs = head(x).softmax(-1)
    # Untargeted against the true label when known, else against the clean prediction.
    target = labels.to(device) if labels is not None else clean_probs.argmax(-1)
    with autocast_for(resolve_precision(request.precision, device), device):
        result = apgd_attack(ClassifierObjective(head, target), x, request.eps.value, n_iter=request.n_iter,
                             seed=request.seed)
    norms = check_perturbation(result.x_adv, x, request.eps.value)
    with torch.no_grad():
        adv_probs = head(result.x_adv).softmax(-1)
    request.out.mkdir(parents=True, exist_ok=True)
    classes = dataset.classnames
    items = []
    for i, name in enumerate(names):
        c, a = int(clean_probs[i].argmax()), int(adv_probs[i].argmax())
        before, after = f"{classes[c]} {clean_probs[i, c]:.0%}", f"{classes[a]} {adv_probs[i, a]:.0%}"
        if labels is not None:
            before += f" (true: {classes[int(labels[i])]})"
        adv_path = request.out / f"{name}_adv.png"
        panel_path = request.out / f"{name}_panel.png"
        _to_pil(result.x_adv[i]).save(adv_path)
        _panel(x[i], result.x_adv[i], request.eps.value, before, after).save(panel_path)
        truth = classes[int(labels[i])] if labels is not None else None
        items.append(AttackedImage(name, truth, classes[c], float(clean_probs[i, c]), classes[a],
                                   float(adv_probs[i, a]), float(norms[i]), adv_path, panel_path))
    return items
