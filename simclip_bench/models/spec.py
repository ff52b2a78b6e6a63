"""One model spec, four forms, one loader.

``--model`` accepts:

* a built-in name, e.g. ``tiny-clip`` (shipped weights, no download);
* an open_clip ``ARCH:TAG``, e.g. ``ViT-L-14:openai`` (downloads when online), where TAG may
  also be a local weights file, e.g. ``ViT-B-32:/ckpt/fare.pt``;
* ``hf-hub:org/repo`` (open_clip's hub schema);
* a local checkpoint: a run directory of ``simclip train``, an ``encoder.safetensors`` written
  by it, or an open_clip ``local-dir`` folder (``open_clip_config.json`` + weights);
* ``random:ARCH[@PX][/LAYERS]``: an open_clip architecture with random weights, for rehearsals
  (:mod:`simclip_bench.models.random_init`);
* ``BASE=FILE``: a vision-tower state dict (``FILE``, e.g. Sim-CLIP's ``simclip4.pt``) on the model
  ``BASE``, which supplies the text tower and the preprocessing. ``BASE`` is any spec above or the
  name of a vision-tower release in the catalog (``simclip4=/data/simclip4.pt``: the catalog knows its
  base, ``ViT-L-14:openai``). A plain path to a file named like such a release (``/data/simclip4.pt``)
  means the same.

Weights are read from safetensors, or with ``torch.load(weights_only=True)``; nothing is unpickled
unless the caller passes ``allow_unsafe_pickle=True`` (CLI: ``--allow-unsafe-pickle``), which lets a
trusted ``.pt``/``.bin`` that holds more than tensors (e.g. old training scripts saved their
``argparse.Namespace`` beside the state dict) load with the full unpickler.

:func:`parse_model_spec` is the pure, text-only half of :func:`load_model`.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from safetensors import SafetensorError

from simclip_bench.errors import UserError, did_you_mean, first_line
from simclip_bench.models.builtin import BUILTIN_MODELS, register_model_configs
from simclip_bench.models.checkpoint import (
    ENCODER_FILENAME,
    ENCODER_FORMAT,
    load_safetensors,
    read_safetensors_metadata,
    state_dict_sha256,
)
from simclip_bench.models.hub import in_cache, offline_error, offline_reason, quiet_hub
from simclip_bench.models.known_checkpoints import KNOWN_CHECKPOINTS, known_by_name
from simclip_bench.models.pixel_clip import PixelSpaceCLIP
from simclip_bench.models.random_init import create_random_clip, is_random_spec
from simclip_bench.models.vision_tower import UNSAFE_PICKLE_FLAG, read_vision_tower

HF_HUB = "hf-hub:"
SPEC_KINDS = ("builtin", "hf-hub", "arch-tag", "vision-tower", "path")
TOWER_SEP = "="


@dataclass(frozen=True)
class ParsedSpec:
    """A ``--model`` value split by its text alone, before any file or registry is consulted.

    ``kind`` is one of :data:`SPEC_KINDS`. ``arch-tag`` (``ARCH:TAG``, with ``arch`` and ``tag`` set) may
    still name an existing file or folder, which :func:`load_model` tries first; ``vision-tower``
    (``BASE=FILE``, with ``base`` and ``weights`` set) too; ``path`` is anything else.
    """

    text: str
    kind: str
    arch: str | None = None
    tag: str | None = None
    base: str | None = None
    weights: str | None = None


def parse_model_spec(spec: str) -> ParsedSpec:
    """Split a ``--model`` value into its form (see the module docstring); UserError when it is empty."""
    text = str(spec).strip()
    if not text:
        raise UserError("empty model spec; pass e.g. --model tiny-clip or --model ViT-L-14:openai")
    if text in BUILTIN_MODELS:
        return ParsedSpec(text, "builtin")
    if TOWER_SEP in text:  # the first '=': a base spec has none, a file name may
        base, weights = (part.strip() for part in text.split(TOWER_SEP, 1))
        if not base or not weights:
            raise UserError(f"{text!r}: write a vision-tower file as BASE=FILE, e.g. simclip4=/data/simclip4.pt "
                            "or ViT-L-14:openai=/data/fare4.pt")
        return ParsedSpec(text, "vision-tower", base=base, weights=weights)
    if text.startswith(HF_HUB):
        if not text[len(HF_HUB):].strip():
            raise UserError(f"{text!r} names no repository; write it as hf-hub:org/repo, e.g. hf-hub:chs20/fare4-clip")
        return ParsedSpec(text, "hf-hub")
    if ":" in text:
        arch, tag = text.split(":", 1)
        return ParsedSpec(text, "arch-tag", arch, tag)
    return ParsedSpec(text, "path")


def _existing_path(text: str) -> Path | None:
    """``text`` (``~`` expanded) when it names an existing file or folder, else None. A name the system
    cannot even look up (too long, ``~user`` of an unknown user) is not a path either, not a crash."""
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


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


def _create(arch_or_schema: str, pretrained: str | None, allow_unsafe_pickle: bool = False):
    """open_clip's model with its weights; ``allow_unsafe_pickle`` reads ``.pt``/``.bin`` with
    ``torch.load(weights_only=False)``, which runs any code the file holds (default False: tensors only)."""
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


def _create_from_hub(spec: str, arch_or_schema: str, pretrained: str | None, allow_unsafe_pickle: bool = False):
    """:func:`_create` for a model that comes from the Hugging Face Hub (``hf-hub:``, or ``ARCH:TAG`` of
    open_clip's registry): offline, from the cache or one line at once (:mod:`simclip_bench.models.hub`)."""
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
        return _create(arch_or_schema, pretrained, allow_unsafe_pickle)


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


def _encoder_metadata(path: Path) -> dict[str, str]:
    try:
        meta = read_safetensors_metadata(path)
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({first_line(e)})") from None
    if meta.get("format") != ENCODER_FORMAT:
        raise UserError(f"{path} is not a simclip-bench encoder checkpoint; for a full open_clip checkpoint "
                        f"use ARCH:PATH, e.g. --model ViT-B-32:{path}")
    if not meta.get("base_model"):
        raise UserError(f"{path} does not name the base model it was fine-tuned from; it is damaged")
    return meta


def _load_encoder_checkpoint(path: Path, display: str, device: torch.device,
                             allow_unsafe_pickle: bool = False) -> LoadedModel:
    meta = _encoder_metadata(path)
    base = load_model(meta["base_model"], device, allow_unsafe_pickle)
    state = load_safetensors(path)
    missing, unexpected = base.model.clip.visual.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not fit base model {meta['base_model']!r}: "
                        f"{len(missing)} missing and {len(unexpected)} unexpected keys")
    base.model.to(device)
    return LoadedModel(spec=display, model_id=display, arch=meta.get("arch", base.arch), model=base.model,
                       checkpoint_hash=state_dict_sha256(state))


def _load_local(path: Path, spec: str, device: torch.device, allow_unsafe_pickle: bool = False) -> LoadedModel:
    if path.is_dir():
        if (path / ENCODER_FILENAME).is_file():
            return _load_encoder_checkpoint(path / ENCODER_FILENAME, spec, device, allow_unsafe_pickle)
        if (path / "open_clip_config.json").is_file():
            return _finish(spec, "local-dir", *_create(f"local-dir:{path}", None, allow_unsafe_pickle), device)
        raise UserError(f"{path} is a directory without {ENCODER_FILENAME} or open_clip_config.json; "
                        "pass a run directory of 'simclip train' or an open_clip export folder")
    if path.suffix == ".safetensors":
        return _load_encoder_checkpoint(path, spec, device, allow_unsafe_pickle)
    release = next((c for c in KNOWN_CHECKPOINTS.values() if c.tower_file and c.tower_file == path.name), None)
    if release is not None:  # /data/simclip4.pt: a release of the catalog, under its own file name
        return _load_vision_tower(ParsedSpec(spec, "vision-tower", base=release.name, weights=spec), device,
                                  allow_unsafe_pickle)
    raise UserError(f"cannot tell the architecture of {path}; write it as ARCH:PATH, e.g. --model ViT-B-32:{path}")


def _load_arch_tag(parsed: ParsedSpec, device: torch.device, allow_unsafe_pickle: bool = False) -> LoadedModel:
    """``ARCH:TAG``, TAG a pretrained tag of open_clip's registry or a weights file."""
    arch, tag = parsed.arch, parsed.tag
    register_model_configs()
    if arch not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {arch!r}{did_you_mean(arch, open_clip.list_models())}; "
                        "see open_clip.list_models()")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    weights_file = _existing_path(tag)
    if weights_file is not None and weights_file.is_file():
        return _finish(parsed.text, arch, *_create(arch, str(weights_file), allow_unsafe_pickle), device)
    if tag not in tags:
        raise UserError(f"{tag!r} is neither a pretrained tag of {arch} nor a file{did_you_mean(tag, tags)}; "
                        f"known tags: {', '.join(tags) or 'none'}")
    return _finish(parsed.text, arch, *_create_from_hub(parsed.text, arch, tag, allow_unsafe_pickle), device)


def _tower_base(base: str) -> str:
    """The ``--model`` spec of the model under a vision-tower file: a catalog release's base, or ``base``."""
    release = known_by_name(base)
    if release is not None:
        return release.base_spec
    parsed = parse_model_spec(base)
    if parsed.kind == "path" and _existing_path(base) is None:
        releases = [c.name for c in KNOWN_CHECKPOINTS.values() if c.tower_file]
        raise UserError(f"unknown model {base!r} before '='{did_you_mean(base, releases + list(BUILTIN_MODELS))}; "
                        f"write a vision-tower release ({', '.join(releases)}) or the --model spec of its base, "
                        "e.g. ViT-L-14:openai=/data/fare4.pt")
    return base


def _load_vision_tower(parsed: ParsedSpec, device: torch.device, allow_unsafe_pickle: bool = False) -> LoadedModel:
    """``BASE=FILE``: the base model with its vision tower replaced by the state dict in FILE.

    The file is read and checked first, so a wrong file answers before the base model is built (or
    downloaded); then its keys must match the base's vision tower exactly, no key missing or left over.
    """
    base_spec = _tower_base(parsed.base)
    path, state = read_vision_tower(parsed.weights, allow_unsafe_pickle)
    base = load_model(base_spec, "cpu", allow_unsafe_pickle)
    visual = base.model.clip.visual
    expected = set(visual.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        example = f"e.g. missing {missing[0]!r}" if missing else f"e.g. unexpected {unexpected[0]!r}"
        raise UserError(f"{path} does not fit the vision tower of {base_spec}: {len(missing)} missing and "
                        f"{len(unexpected)} unexpected keys ({example}); is it the vision tower of another "
                        "architecture?")
    try:
        visual.load_state_dict(state, strict=True)
    except RuntimeError as e:  # same names, other shapes: another width or patch size
        raise UserError(f"{path} does not fit the vision tower of {base_spec}: {first_line(e)}") from None
    base.model.to(device)
    return LoadedModel(spec=parsed.text, model_id=parsed.text, arch=base.arch, model=base.model,
                       checkpoint_hash=state_dict_sha256(visual.state_dict()))


def _finish(spec: str, arch: str, clip, tokenizer, device: torch.device, model_id: str | None = None) -> LoadedModel:
    model = wrap_open_clip(clip, tokenizer).to(device)
    return LoadedModel(spec=spec, model_id=model_id or spec, arch=arch, model=model,
                       checkpoint_hash=state_dict_sha256(clip.visual.state_dict()))


def load_model(spec: str, device: torch.device | str = "cpu", allow_unsafe_pickle: bool = False) -> LoadedModel:
    """Load a model from any supported spec (see module docstring), frozen, in eval mode.

    ``allow_unsafe_pickle`` (default False; CLI ``--allow-unsafe-pickle``): read ``.pt``/``.bin`` weights
    with the full unpickler, which runs whatever code the file holds; only for files you trust.
    """
    device = torch.device(device)
    if is_random_spec(spec):  # random:ARCH[@PX][/LAYERS]: the architecture with random weights (random_init.py)
        clip, tokenizer, arch = create_random_clip(spec)
        return _finish(str(spec).strip(), arch, clip, tokenizer, device)
    parsed = parse_model_spec(spec)
    spec = parsed.text
    if parsed.kind == "builtin":
        b = BUILTIN_MODELS[spec]
        if not b.weights.is_file():
            raise UserError(f"built-in weights missing at {b.weights}; regenerate them with 'simclip pretrain-builtin'")
        return _finish(spec, b.arch, *_create(b.arch, str(b.weights)), device)
    if parsed.kind == "hf-hub":
        return _finish(spec, spec, *_create_from_hub(spec, spec, None, allow_unsafe_pickle), device)
    path = _existing_path(spec)
    if path is not None:
        return _load_local(path, spec, device, allow_unsafe_pickle)
    if parsed.kind == "vision-tower":
        return _load_vision_tower(parsed, device, allow_unsafe_pickle)
    if parsed.kind == "arch-tag":
        return _load_arch_tag(parsed, device, allow_unsafe_pickle)
    choices = list(BUILTIN_MODELS) + open_clip.list_models()
    raise UserError(f"unknown model {spec!r}{did_you_mean(spec, choices)}; use a built-in name "
                    f"({', '.join(BUILTIN_MODELS)}), ARCH:TAG (e.g. ViT-L-14:openai), hf-hub:org/repo, BASE=FILE "
                    "or a path")
