"""``simclip attack``: craft adversarial examples and save them as pictures people can look at.

For each image it writes ``<name>_adv.png`` (the adversarial image, lossless, at the model's
resolution) and ``<name>_panel.png``: original | perturbation (amplified to fill [0,1]) |
adversarial, with the prediction and its probability before and after.

The zero-shot classifier has the built-in shape classes and templates, or, for given images, the
user's ``class_names`` (a file with one name per line, or a comma-separated list) with their
``templates`` (default CLIP's ``a photo of a {}.``). A true label (built-in images, or ``labels`` for
given ones) is attacked and reported as right or wrong; without one the clean prediction is attacked.
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
from simclip_bench.attacks.eps import Eps
from simclip_bench.data.classification import read_lines
from simclip_bench.data.image_io import ImageReadError, read_rgb, square_tensor
from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.devices import autocast_for, check_precision, resolve_device, resolve_precision
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.memory.adaptive_batch import AdaptiveBatch
from simclip_bench.models.spec import load_model
from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

ATTACK_BATCH = 500  # APGD's working batch here; halved when it runs out of memory
PANEL_SCALE = 6  # nearest-neighbour upscaling so 32-px images are visible
CLIP_TEMPLATE = "a photo of a {}."  # CLIP's prompt for class names of one's own


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
    class_names: str | None = None  # with images: a file of names, one per line, or "cat,dog"; None: the shapes
    templates: list[str] = field(default_factory=list)  # prompts with {} for the name; empty: the default
    labels: list[str] = field(default_factory=list)  # the true class of each given image, in order (optional)


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
    clean_correct: bool | None = None  # None when the true label is unknown


def load_image_file(path: Path, size: int) -> torch.Tensor:
    """An image file (read by :func:`~simclip_bench.data.image_io.read_rgb`) as (3, size, size) in [0,1]:
    shorter side resized to ``size``, centre-cropped."""
    try:
        image = read_rgb(path)
    except FileNotFoundError:
        raise UserError(f"--image {path}: no such file") from None
    except ImageReadError as e:
        raise UserError(f"--image {path}: {e}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"--image {path}: not a readable image ({e.__class__.__name__})") from None
    return square_tensor(image, size)


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


def parse_class_names(value: str) -> tuple[str, ...]:
    """``--class-names``: a file with one name per line (blank lines skipped), or a comma-separated list."""
    text = value.strip()
    path = Path(text).expanduser() if text else None
    how = "give a file with one class name per line, or a comma-separated list (--class-names cat,dog)"
    if path is not None and path.is_file():
        try:
            names = tuple(read_lines(path))
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--class-names {text}: cannot read it as UTF-8 text ({type(e).__name__}); {how}") from None
        if not names:
            raise UserError(f"--class-names {text} has no class names; write one name per line")
    elif "," in text or not text:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        if not names:
            raise UserError(f"--class-names {value!r} names no classes; {how}")
    elif path is not None and path.is_dir():
        raise UserError(f"--class-names {text} is a folder; {how}")
    elif "/" in text or "\\" in text or text.endswith(".txt"):
        raise UserError(f"--class-names {text}: no such file; {how}")
    else:
        names = (text,)
    if len(names) < 2:
        raise UserError(f"--class-names {text} gives 1 class ({names[0]!r}); zero-shot classification needs at "
                        "least 2 (with one, every prediction is right)")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UserError(f"--class-names names {twice!r} twice; give each class once")
    return names


def check_templates(templates: list[str]) -> None:
    """Every ``--template`` must say where the class name goes: ``{}`` (or CLIP_benchmark's ``{c}``)."""
    for t in templates:
        if "{}" not in t and "{c}" not in t:
            raise UserError(f"--template {t!r} has no {{}} where the class name goes; e.g. --template "
                            f"'{CLIP_TEMPLATE}'")


def _classes(request: AttackRequest, shapes: ShapesDataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class names, templates) of the classifier, and the request's labels checked against them."""
    if (request.class_names is not None or request.labels) and not request.images:
        raise UserError("--class-names and --label describe your own images; add --image (the built-in test "
                        "images have the shapes classes)")
    check_templates(request.templates)
    if request.class_names is None:
        names, templates = tuple(shapes.classnames), tuple(request.templates or shapes.templates)
    else:
        names, templates = parse_class_names(request.class_names), tuple(request.templates or (CLIP_TEMPLATE,))
    if request.labels and len(request.labels) != len(request.images):
        raise UserError(f"{len(request.labels)} --label for {len(request.images)} --image; give one --label per "
                        "--image, in the same order")
    for label in request.labels:
        if label not in names:
            raise UserError(f"--label {label!r} is not one of the class names{did_you_mean(label, names)} "
                            f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    return names, templates


def run_attack_gallery(request: AttackRequest) -> list[AttackedImage]:
    """Attack each image with APGD-CE against the zero-shot classifier of the class names (see the module)."""
    if request.eps is None:
        raise UserError("--eps is required")
    if request.n_images <= 0 or request.n_iter <= 0:
        raise UserError("--n-images and --iterations must be positive integers")
    check_precision(request.precision)
    dataset = ShapesDataset("test")
    classes, templates = _classes(request, dataset)
    device = resolve_device(request.device)
    loaded = load_model(request.model, device, request.allow_unsafe_pickle)
    model = loaded.model
    dataset = ShapesDataset("test", image_size=model.image_size)
    if request.images:
        x = torch.stack([load_image_file(p, model.image_size) for p in request.images])
        names = [_safe_name(p.stem) for p in request.images]
        labels = torch.tensor([classes.index(label) for label in request.labels]) if request.labels else None
    else:
        if request.n_images > len(dataset):
            raise UserError(f"--n-images {request.n_images} exceeds the {len(dataset)} test images")
        x, labels = dataset.tensors(list(range(request.n_images)))
        names = [_safe_name(dataset.sample_id(i)) for i in range(request.n_images)]
    x = x.to(device)
    head = ZeroShotClassifier(model.encoder, build_text_classifier(model, classes, templates)).eval()
    batch = AdaptiveBatch(ATTACK_BATCH, "attack batch")

    def probabilities(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(batch.map_chunks(len(images), lambda part: head(images[part]).softmax(-1)))

    clean_probs = probabilities(x)
    # Untargeted against the true label when known, else against the clean prediction.
    target = labels.to(device) if labels is not None else clean_probs.argmax(-1)

    def attack(size: int):
        with autocast_for(resolve_precision(request.precision, device), device):
            return apgd_attack(ClassifierObjective(head, target), x, request.eps.value, n_iter=request.n_iter,
                               seed=request.seed, batch_size=size)

    result = batch.run(attack)
    norms = check_perturbation(result.x_adv, x, request.eps.value)
    adv_probs = probabilities(result.x_adv)
    request.out.mkdir(parents=True, exist_ok=True)
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
                                   float(adv_probs[i, a]), float(norms[i]), adv_path, panel_path,
                                   clean_correct=None if truth is None else c == int(labels[i])))
    return items
