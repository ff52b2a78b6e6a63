"""One model spec, four forms, one loader.

``--model`` accepts:

* a built-in name, e.g. ``tiny-clip`` (shipped weights, no download);
* an open_clip ``ARCH:TAG``, e.g. ``ViT-L-14:openai`` (downloads when online), where TAG may
  also be a local weights file, e.g. ``ViT-B-32:/ckpt/fare.pt``;
* ``hf-hub:org/repo`` (open_clip's hub schema);
* a local checkpoint: a run directory of ``simclip train``, an ``encoder.safetensors`` written
  by it, or an open_clip ``local-dir`` folder (``open_clip_config.json`` + weights).

Weights are read from safetensors, or with ``torch.load(weights_only=True)``; nothing is unpickled.
"""
from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.models.builtin import BUILTIN_MODELS, register_model_configs
from simclip_bench.models.checkpoint import (
    ENCODER_FILENAME,
    ENCODER_FORMAT,
    load_safetensors,
    read_safetensors_metadata,
    state_dict_sha256,
)
from simclip_bench.models.pixel_clip import PixelSpaceCLIP

RUN_CONFIG = "config.json"


@dataclass
class LoadedModel:
    """A model ready for evaluation, with its provenance.

    ``model_id`` is how the model is named in result tables; ``checkpoint_hash`` is the sha256 of
    the vision tower's weights, so two rows with the same hash evaluated the same encoder.
    """

    spec: str
    model_id: str
    arch: str
    model: PixelSpaceCLIP
    checkpoint_hash: str


def _preprocess_stats(clip) -> tuple[list[float], list[float]]:
    cfg = getattr(clip.visual, "preprocess_cfg", None) or {}
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    return list(mean), list(std)


def _image_size(clip) -> int:
    size = getattr(clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def wrap_open_clip(clip, tokenizer) -> PixelSpaceCLIP:
    """Wrap an open_clip model so it takes [0,1] images; puts it in eval mode, frozen."""
    mean, std = _preprocess_stats(clip)
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return PixelSpaceCLIP(clip, tokenizer, mean, std, _image_size(clip))


def needs_quick_gelu(arch: str, pretrained: str | None) -> bool:
    """True when a registered pretrained tag was trained with QuickGELU (e.g. every ``openai`` tag).

    open_clip builds ``ViT-L-14`` with plain GELU and only warns when the ``openai`` weights need
    QuickGELU; the wrong activation silently changes every embedding, so we force the right one.
    """
    if not pretrained or arch.startswith("hf-hub:"):
        return False
    return bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))


def _create(arch_or_schema: str, pretrained: str | None):
    register_model_configs()
    extra = {"force_quick_gelu": True} if needs_quick_gelu(arch_or_schema, pretrained) else {}
    try:
        clip = open_clip.create_model(arch_or_schema, pretrained=pretrained, weights_only=True, **extra)
    except pickle.UnpicklingError as e:
        raise UserError(f"refusing to load {pretrained!r}: it is a pickle that needs more than plain tensors "
                        f"({str(e).splitlines()[0][:120]}); convert it to safetensors from a trusted source") from None
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise UserError(f"could not load open_clip model {arch_or_schema!r} (pretrained={pretrained!r}): "
                        f"{str(e).splitlines()[0]}") from None
    tokenizer = open_clip.get_tokenizer(arch_or_schema)
    return clip, tokenizer


def create_untrained(arch: str) -> PixelSpaceCLIP:
    """A randomly initialised open_clip architecture (used by ``pretrain-builtin``); trainable."""
    register_model_configs()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that the model is random: here that is the point
    try:
        clip = open_clip.create_model(arch)
    finally:
        root.setLevel(level)
    model = PixelSpaceCLIP(clip, open_clip.get_tokenizer(arch), *_preprocess_stats(clip), _image_size(clip))
    return model


def _load_encoder_checkpoint(path: Path, display: str, device: torch.device) -> LoadedModel:
    meta = read_safetensors_metadata(path)
    if meta.get("format") != ENCODER_FORMAT:
        raise UserError(f"{path} is not a simclip-bench encoder checkpoint; for a full open_clip checkpoint "
                        f"use ARCH:PATH, e.g. --model ViT-B-32:{path}")
    base = load_model(meta["base_model"], device)
    state = load_safetensors(path)
    missing, unexpected = base.model.clip.visual.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not fit base model {meta['base_model']!r}: "
                        f"{len(missing)} missing and {len(unexpected)} unexpected keys")
    base.model.to(device)
    return LoadedModel(spec=display, model_id=display, arch=meta.get("arch", base.arch), model=base.model,
                       checkpoint_hash=state_dict_sha256(state))


def _load_local(path: Path, spec: str, device: torch.device) -> LoadedModel:
    if path.is_dir():
        if (path / ENCODER_FILENAME).is_file():
            return _load_encoder_checkpoint(path / ENCODER_FILENAME, spec, device)
        if (path / "open_clip_config.json").is_file():
            return _finish(spec, "local-dir", *_create(f"local-dir:{path}", None), device)
        raise UserError(f"{path} is a directory without {ENCODER_FILENAME} or open_clip_config.json; "
                        "pass a run directory of 'simclip train' or an open_clip export folder")
    if path.suffix == ".safetensors":
        return _load_encoder_checkpoint(path, spec, device)
    raise UserError(f"cannot tell the architecture of {path}; write it as ARCH:PATH, e.g. --model ViT-B-32:{path}")


def _finish(spec: str, arch: str, clip, tokenizer, device: torch.device, model_id: str | None = None) -> LoadedModel:
    model = wrap_open_clip(clip, tokenizer).to(device)
    return LoadedModel(spec=spec, model_id=model_id or spec, arch=arch, model=model,
                       checkpoint_hash=state_dict_sha256(clip.visual.state_dict()))


def load_model(spec: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model from any supported spec (see module docstring), frozen, in eval mode."""
    device = torch.device(device)
    spec = spec.strip()
    if not spec:
        raise UserError("empty model spec; pass e.g. --model tiny-clip or --model ViT-L-14:openai")
    if spec in BUILTIN_MODELS:
        b = BUILTIN_MODELS[spec]
        if not b.weights.is_file():
            raise UserError(f"built-in weights missing at {b.weights}; regenerate them with 'simclip pretrain-builtin'")
        return _finish(spec, b.arch, *_create(b.arch, str(b.weights)), device)
    if spec.startswith("hf-hub:"):
        return _finish(spec, spec, *_create(spec, None), device)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_local(path, spec, device)
    if ":" in spec:
        arch, tag = spec.split(":", 1)
        register_model_configs()
        if arch not in open_clip.list_models():
            raise UserError(f"unknown open_clip architecture {arch!r}{did_you_mean(arch, open_clip.list_models())}; "
                            "see open_clip.list_models()")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        weights_file = Path(tag).expanduser()
        if weights_file.is_file():
            return _finish(spec, arch, *_create(arch, str(weights_file)), device)
        if tag not in tags:
            raise UserError(f"{tag!r} is neither a pretrained tag of {arch} nor a file{did_you_mean(tag, tags)}; "
                            f"known tags: {', '.join(tags) or 'none'}")
        return _finish(spec, arch, *_create(arch, tag), device)
    choices = list(BUILTIN_MODELS) + open_clip.list_models()
    raise UserError(f"unknown model {spec!r}{did_you_mean(spec, choices)}; use a built-in name "
                    f"({', '.join(BUILTIN_MODELS)}), ARCH:TAG (e.g. ViT-L-14:openai), hf-hub:org/repo or a path")


def run_config(run_dir: Path) -> dict:
    """The resolved config saved by ``simclip train`` in ``run_dir``."""
    return json.loads((Path(run_dir) / RUN_CONFIG).read_text())
