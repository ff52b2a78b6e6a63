"""Randomly initialised open_clip architectures: the real network with no weights, nothing downloaded.

``--model random:ARCH[@PX][/LAYERS]`` builds the open_clip architecture ``ARCH`` (any name of
``open_clip.list_models()``, e.g. ``ViT-L-14``, ``convnext_base_w``) with seeded random weights. It is for
rehearsing real scale without weights: the catalog contract test (``tests/test_catalog_contract.py``), the
GPU check, memory and speed trials on a lent machine. Its accuracy is chance.

* ``@PX`` runs the architecture at ``PX`` pixels instead of its config's size (open_clip resizes the position
  embedding; everything else, widths and code path, is the architecture's own);
* ``/LAYERS`` keeps the first ``LAYERS`` transformer blocks of a ViT tower (same widths, a shallower tower),
  for machines where the full depth does not fit;
* a QuickGELU variant is named like open_clip names it (``ViT-L-14-quickgelu``).

A changed size or depth is registered with open_clip as a config of its own (``ViT-L-14@56px``), so the model
exports and reloads like any other (:mod:`simclip_bench.models.export`). An architecture whose tokenizer needs
a download (e.g. CLIPA's ``bert-base-uncased``) gets an offline stand-in: open_clip's CLIP tokenizer with ids
folded into the text tower's vocabulary (a random text tower has no use for real words).
"""
from __future__ import annotations

import atexit
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.models.builtin import register_model_configs

RANDOM_PREFIX = "random:"
_FORM = re.compile(r"^(?P<arch>[^@/]+?)(?:@(?P<px>\d+))?(?:/(?P<layers>\d+))?$")
_variant_dir: Path | None = None


@dataclass(frozen=True)
class RandomSpec:
    """A parsed ``random:ARCH[@PX][/LAYERS]``; ``image_size`` / ``layers`` None keep the config's."""

    arch: str
    image_size: int | None = None
    layers: int | None = None

    @property
    def text(self) -> str:
        return (f"{RANDOM_PREFIX}{self.arch}" + (f"@{self.image_size}" if self.image_size else "")
                + (f"/{self.layers}" if self.layers else ""))

    @property
    def variant(self) -> str:
        """The open_clip config name of the built architecture (``ARCH`` itself when nothing is changed)."""
        return self.arch + (f"@{self.image_size}px" if self.image_size else "") + \
            (f"-{self.layers}L" if self.layers else "")


def is_random_spec(text: str) -> bool:
    return str(text).strip().startswith(RANDOM_PREFIX)


def parse_random_spec(text: str) -> RandomSpec:
    """``random:ViT-L-14@56/2`` -> RandomSpec; an unknown architecture or a bad size is a UserError."""
    body = str(text).strip()[len(RANDOM_PREFIX):]
    match = _FORM.match(body)
    if not match:
        raise UserError(f"{text!r}: write a random-init model as random:ARCH[@PX][/LAYERS], e.g. random:ViT-L-14 or "
                        "random:ViT-H-14@56/8")
    register_model_configs()
    arch = match["arch"].strip()
    if arch not in open_clip.list_models():
        raise UserError(f"{text!r}: unknown open_clip architecture {arch!r}"
                        f"{did_you_mean(arch, open_clip.list_models())}")
    px, layers = (int(match[k]) if match[k] else None for k in ("px", "layers"))
    if px is not None and not 8 <= px <= 4096:
        raise UserError(f"{text!r}: the image size must be from 8 to 4096 pixels, got {px}")
    config = open_clip.get_model_config(arch)
    vision = config["vision_cfg"]
    if layers is not None:
        if "timm_model_name" in vision:
            raise UserError(f"{text!r}: /LAYERS applies to ViT towers; {arch} is a timm "
                            f"{vision['timm_model_name']} tower")
        if not 1 <= layers <= int(vision["layers"]):
            raise UserError(f"{text!r}: {arch} has {vision['layers']} blocks; keep from 1 to {vision['layers']}")
    if px is not None and "patch_size" in vision and px % int(vision["patch_size"]):
        raise UserError(f"{text!r}: {px} px is not a multiple of {arch}'s patch size {vision['patch_size']}")
    return RandomSpec(arch, px if px != _size(vision) else None,
                      layers if layers != vision.get("layers") else None)


def _size(vision: dict) -> int:
    size = vision.get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def register_variant(spec: RandomSpec) -> str:
    """Register the changed architecture of ``spec`` with open_clip (a JSON config in a folder of this process)
    and return its name; the architecture's own name when nothing is changed."""
    if spec.variant == spec.arch or spec.variant in open_clip.list_models():
        return spec.variant
    global _variant_dir
    config = open_clip.get_model_config(spec.arch)
    if spec.image_size:
        config["vision_cfg"]["image_size"] = spec.image_size
    if spec.layers:
        config["vision_cfg"]["layers"] = spec.layers
    if _variant_dir is None:
        _variant_dir = Path(tempfile.mkdtemp(prefix="simclip-random-configs-"))
        atexit.register(shutil.rmtree, _variant_dir, True)
    path = _variant_dir / f"{spec.variant}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return spec.variant


def offline_tokenizer(arch: str):
    """``arch``'s own tokenizer, or, where that needs a download, CLIP's tokenizer folded into its vocabulary."""
    try:
        return open_clip.get_tokenizer(arch)
    except (OSError, ValueError, ImportError):
        text = open_clip.get_model_config(arch)["text_cfg"]
        return _FoldedTokenizer(int(text.get("context_length", 77)), int(text.get("vocab_size", 49408)))


class _FoldedTokenizer:
    """CLIP's BPE tokenizer with ids taken modulo ``vocab_size``: token ids a random text tower accepts."""

    def __init__(self, context_length: int, vocab_size: int) -> None:
        self.inner = open_clip.SimpleTokenizer(context_length=context_length)
        self.vocab_size = vocab_size
        self.context_length = context_length

    def __call__(self, texts, context_length: int | None = None) -> torch.Tensor:
        return self.inner(texts, context_length or self.context_length) % self.vocab_size


def create_random_clip(text: str, seed: int = 0):
    """(open_clip model, tokenizer, architecture name) of ``random:...``: seeded random weights, on the CPU."""
    spec = parse_random_spec(text)
    name = register_variant(spec)
    torch.manual_seed(seed)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights are loaded: here that is the point
    try:
        clip = open_clip.create_model(name, pretrained=None)
    finally:
        root.setLevel(level)
    return clip, offline_tokenizer(name), name
