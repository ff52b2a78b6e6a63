"""Building an open_clip model with its weights, and wrapping it to take [0,1] pixels.

open_clip does the building; this module adds what the loader needs around it: the built-in configs
registered first, the right activation for weights trained with QuickGELU, nothing unpickled unless
asked, the Hugging Face Hub reached only when it can be (:mod:`simclip_bench.models.hub`), and every
failure of a damaged or foreign weights file turned into one :class:`~simclip_bench.errors.UserError`.
"""
from __future__ import annotations

import logging
import os
import pickle

import open_clip
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from safetensors import SafetensorError

from simclip_bench.errors import UserError, first_line
from simclip_bench.models.builtin import register_model_configs
from simclip_bench.models.hub import in_cache, offline_error, offline_reason, quiet_hub
from simclip_bench.models.pixel_clip import PixelSpaceCLIP
from simclip_bench.models.spec_syntax import HF_HUB
from simclip_bench.models.vision_tower import UNSAFE_PICKLE_FLAG


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
    if not pretrained or arch.startswith(HF_HUB):
        return False
    return bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))


def architectures() -> list[str]:
    """Every architecture open_clip can build here, the built-in ones included."""
    register_model_configs()
    return open_clip.list_models()


def pretrained_tags(arch: str) -> list[str]:
    """The pretrained tags open_clip's registry knows for ``arch``."""
    return open_clip.list_pretrained_tags_by_model(arch)


def create_open_clip(arch_or_schema: str, pretrained: str | None, allow_unsafe_pickle: bool = False):
    """open_clip's model with its weights, and its tokenizer; ``allow_unsafe_pickle`` reads ``.pt``/``.bin``
    with ``torch.load(weights_only=False)``, which runs any code the file holds (default False: tensors only)."""
    register_model_configs()
    extra = {"force_quick_gelu": True} if needs_quick_gelu(arch_or_schema, pretrained) else {}
    try:
        clip = open_clip.create_model(arch_or_schema, pretrained=pretrained, weights_only=not allow_unsafe_pickle,
                                      **extra)
    except pickle.UnpicklingError as e:
        if allow_unsafe_pickle:  # not a weights-only refusal: the file is no pickle at all
            raise UserError(f"could not load {pretrained!r}: it is not a readable checkpoint "
                            f"({first_line(e)})") from None
        raise UserError(f"refusing to load {pretrained!r}: it is a pickle that needs more than plain tensors "
                        f"({first_line(e)[:120]}); convert it to safetensors, or, if you trust this file, pass "
                        f"{UNSAFE_PICKLE_FLAG} (it can run arbitrary code)") from None
    except (RuntimeError, OSError, ValueError, KeyError, EOFError, SafetensorError, StopIteration,
            AttributeError, ImportError) as e:
        # a damaged or foreign weights file fails inside open_clip in many ways (empty .pt: EOFError; empty
        # state dict: StopIteration; a pickled list: AttributeError; with full unpickling, a class from a
        # training script that is not installed: ModuleNotFoundError): all of them are the file's fault
        raise UserError(f"could not load open_clip model {arch_or_schema!r} (pretrained={pretrained!r}): "
                        f"{first_line(e)}") from None
    tokenizer = open_clip.get_tokenizer(arch_or_schema)
    return clip, tokenizer


def _hub_files(arch_or_schema: str, pretrained: str | None) -> tuple[str, list[list[str]]] | None:
    """The hub repository a load would download from and the files it needs (each inner list: one file and
    its alternatives), or None when it downloads from no hub (a local file, or a tag with a plain URL)."""
    if arch_or_schema.startswith(HF_HUB):
        return arch_or_schema[len(HF_HUB):], [[HF_CONFIG_NAME], [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]]
    hub = open_clip.get_pretrained_cfg(arch_or_schema, pretrained).get("hf_hub", "") if pretrained else ""
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    if not filename:
        return repo, [[HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]]
    return repo, [[filename, os.path.splitext(filename)[0] + ".safetensors"]]


def create_from_hub(spec: str, arch_or_schema: str, pretrained: str | None, allow_unsafe_pickle: bool = False):
    """:func:`create_open_clip` for a model that comes from the Hugging Face Hub (``hf-hub:``, or ``ARCH:TAG``
    of open_clip's registry): offline, from the cache or one line at once (:mod:`simclip_bench.models.hub`)."""
    reason = offline_reason()
    files = _hub_files(arch_or_schema, pretrained)
    if reason is not None and files is not None:
        repo, needed = files
        if not all(in_cache(repo, names) for names in needed):
            if arch_or_schema.startswith(HF_HUB):
                fix = (f"download the repository elsewhere ('hf download {repo} --local-dir DIR') "
                       "and pass the folder: --model DIR")
            else:  # a file has no tag to say its weights want QuickGELU: the -quickgelu architecture does
                quick = f"{arch_or_schema}-quickgelu"
                arch = quick if needs_quick_gelu(arch_or_schema, pretrained) and quick in open_clip.list_models() \
                    else arch_or_schema
                fix = (f"download {needed[0][0]} of {repo} elsewhere and pass the file: "
                       f"--model {arch}:/path/to/{needed[0][0]}")
            raise offline_error(spec, reason, fix)
    with quiet_hub(offline=reason is not None):
        return create_open_clip(arch_or_schema, pretrained, allow_unsafe_pickle)


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
    return PixelSpaceCLIP(clip, open_clip.get_tokenizer(arch), *_preprocess_stats(clip), _image_size(clip))
