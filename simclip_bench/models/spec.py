"""One model spec, five forms, one loader.

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

Reading the text of a spec is :mod:`simclip_bench.models.spec_syntax`; building an open_clip model with
its weights is :mod:`simclip_bench.models.open_clip_build`. This module decides which form a spec is
and puts the pieces together.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError

from simclip_bench.errors import UserError, did_you_mean, first_line
from simclip_bench.models.builtin import BUILTIN_MODELS
from simclip_bench.models.checkpoint import (
    ENCODER_FILENAME,
    ENCODER_FORMAT,
    load_safetensors,
    read_safetensors_metadata,
    state_dict_sha256,
)
from simclip_bench.models.known_checkpoints import KNOWN_CHECKPOINTS, known_by_name
from simclip_bench.models.open_clip_build import (
    architectures,
    create_from_hub,
    create_open_clip,
    pretrained_tags,
    wrap_open_clip,
)
from simclip_bench.models.pixel_clip import PixelSpaceCLIP
from simclip_bench.models.random_init import create_random_clip, is_random_spec
from simclip_bench.models.spec_syntax import ParsedSpec, parse_model_spec
from simclip_bench.models.vision_tower import read_vision_tower


@dataclass
class LoadedModel:
    """A model ready for evaluation, with its provenance.

    ``model_id`` is how the model is named in result tables; ``checkpoint_hash`` is the sha256 of
    the vision tower's weights, so two rows with the same hash evaluated the same encoder; ``text_hash``
    (computed on first use) that of the rest (the text tower that builds a zero-shot classifier).
    """

    spec: str
    model_id: str
    arch: str
    model: PixelSpaceCLIP
    checkpoint_hash: str

    @cached_property
    def text_hash(self) -> str:
        """Hash of every weight but the vision tower's (text tower, logit scale): part of a zero-shot row's key."""
        from simclip_bench.models.checkpoint import weights_sha256

        return weights_sha256(self.model.clip, exclude=("visual.",))


def _existing_path(text: str) -> Path | None:
    """``text`` (``~`` expanded) when it names an existing file or folder, else None. A name the system
    cannot even look up (too long, ``~user`` of an unknown user) is not a path either, not a crash."""
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


# The encoder files being loaded, outermost first: an encoder's base model is loaded inside its own load, so a
# file whose metadata names itself (directly or through another file) as its base would otherwise never end.
_Chain = tuple[Path, ...]


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


def _load_encoder_checkpoint(path: Path, display: str, device: torch.device, allow_unsafe_pickle: bool,
                             chain: _Chain) -> LoadedModel:
    meta = _encoder_metadata(path)
    here = path.resolve()
    if here in chain:
        loop = " -> ".join(str(p) for p in (*chain[chain.index(here):], here))
        raise UserError(f"{path} names itself as the base model it was fine-tuned from (base_model "
                        f"{meta['base_model']!r}; {loop}); its metadata is damaged: the base must be the model the "
                        "run started from, e.g. tiny-clip or ViT-L-14:openai")
    base = _load(meta["base_model"], device, allow_unsafe_pickle, (*chain, here))
    state = load_safetensors(path)
    missing, unexpected = base.model.clip.visual.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not fit base model {meta['base_model']!r}: "
                        f"{len(missing)} missing and {len(unexpected)} unexpected keys")
    base.model.to(device)
    return LoadedModel(spec=display, model_id=display, arch=meta.get("arch", base.arch), model=base.model,
                       checkpoint_hash=state_dict_sha256(state))


def _load_local(path: Path, spec: str, device: torch.device, allow_unsafe_pickle: bool, chain: _Chain) -> LoadedModel:
    if path.is_dir():
        if (path / ENCODER_FILENAME).is_file():
            return _load_encoder_checkpoint(path / ENCODER_FILENAME, spec, device, allow_unsafe_pickle, chain)
        if (path / "open_clip_config.json").is_file():
            return _finish(spec, "local-dir", *create_open_clip(f"local-dir:{path}", None, allow_unsafe_pickle),
                           device)
        raise UserError(f"{path} is a directory without {ENCODER_FILENAME} or open_clip_config.json; "
                        "pass a run directory of 'simclip train' or an open_clip export folder")
    if path.suffix == ".safetensors":
        return _load_encoder_checkpoint(path, spec, device, allow_unsafe_pickle, chain)
    release = next((c for c in KNOWN_CHECKPOINTS.values() if c.tower_file and c.tower_file == path.name), None)
    if release is not None:  # /data/simclip4.pt: a release of the catalog, under its own file name
        return _load_vision_tower(ParsedSpec(spec, "vision-tower", base=release.name, weights=spec), device,
                                  allow_unsafe_pickle, chain)
    raise UserError(f"cannot tell the architecture of {path}; write it as ARCH:PATH, e.g. --model ViT-B-32:{path}")


def _load_arch_tag(parsed: ParsedSpec, device: torch.device, allow_unsafe_pickle: bool) -> LoadedModel:
    """``ARCH:TAG``, TAG a pretrained tag of open_clip's registry or a weights file."""
    arch, tag = parsed.arch, parsed.tag
    known = architectures()
    if arch not in known:
        raise UserError(f"unknown open_clip architecture {arch!r}{did_you_mean(arch, known)}; "
                        "see open_clip.list_models()")
    tags = pretrained_tags(arch)
    weights_file = _existing_path(tag)
    if weights_file is not None and weights_file.is_file():
        return _finish(parsed.text, arch, *create_open_clip(arch, str(weights_file), allow_unsafe_pickle), device)
    if tag not in tags:
        raise UserError(f"{tag!r} is neither a pretrained tag of {arch} nor a file{did_you_mean(tag, tags)}; "
                        f"known tags: {', '.join(tags) or 'none'}")
    return _finish(parsed.text, arch, *create_from_hub(parsed.text, arch, tag, allow_unsafe_pickle), device)


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


def _load_vision_tower(parsed: ParsedSpec, device: torch.device, allow_unsafe_pickle: bool,
                       chain: _Chain) -> LoadedModel:
    """``BASE=FILE``: the base model with its vision tower replaced by the state dict in FILE.

    The file is read and checked first, so a wrong file answers before the base model is built (or
    downloaded); then its keys must match the base's vision tower exactly, no key missing or left over.
    """
    base_spec = _tower_base(parsed.base)
    path, state = read_vision_tower(parsed.weights, allow_unsafe_pickle)
    base = _load(base_spec, torch.device("cpu"), allow_unsafe_pickle, chain)
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


def _unknown(spec: str) -> UserError:
    """Why ``spec``, of no known form, loads nothing: a bare architecture lacks its weights, anything else is
    unknown."""
    known = architectures()
    if spec in known:
        tags = pretrained_tags(spec)
        ways = [f"a pretrained tag ({spec}:{tags[0]}; its tags: {', '.join(tags)})"] if tags else []
        ways.append(f"a weights file ({spec}:/path/to/weights.pt)")
        builtin = [b.name for b in BUILTIN_MODELS.values() if b.arch == spec]
        also = f"; the built-in {', '.join(builtin)} is this architecture with its weights" if builtin else ""
        return UserError(f"{spec!r} is an open_clip architecture without weights; give it {' or '.join(ways)}{also}")
    return UserError(f"unknown model {spec!r}{did_you_mean(spec, list(BUILTIN_MODELS) + known)}; use a built-in "
                     f"name ({', '.join(BUILTIN_MODELS)}), ARCH:TAG (e.g. ViT-L-14:openai), hf-hub:org/repo, "
                     "BASE=FILE or a path")


def _load(spec: str, device: torch.device, allow_unsafe_pickle: bool, chain: _Chain) -> LoadedModel:
    if is_random_spec(spec):  # random:ARCH[@PX][/LAYERS]: the architecture with random weights (random_init.py)
        clip, tokenizer, arch = create_random_clip(spec)
        return _finish(str(spec).strip(), arch, clip, tokenizer, device)
    parsed = parse_model_spec(spec)
    spec = parsed.text
    if parsed.kind == "builtin":
        b = BUILTIN_MODELS[spec]
        if not b.weights.is_file():
            raise UserError(f"built-in weights missing at {b.weights}; regenerate them with 'simclip pretrain-builtin'")
        return _finish(spec, b.arch, *create_open_clip(b.arch, str(b.weights)), device)
    if parsed.kind == "hf-hub":
        return _finish(spec, spec, *create_from_hub(spec, spec, None, allow_unsafe_pickle), device)
    path = _existing_path(spec)
    if path is not None:
        return _load_local(path, spec, device, allow_unsafe_pickle, chain)
    if parsed.kind == "vision-tower":
        return _load_vision_tower(parsed, device, allow_unsafe_pickle, chain)
    if parsed.kind == "arch-tag":
        return _load_arch_tag(parsed, device, allow_unsafe_pickle)
    raise _unknown(spec)


def load_model(spec: str, device: torch.device | str = "cpu", allow_unsafe_pickle: bool = False) -> LoadedModel:
    """Load a model from any supported spec (see module docstring), frozen, in eval mode.

    ``allow_unsafe_pickle`` (default False; CLI ``--allow-unsafe-pickle``): read ``.pt``/``.bin`` weights
    with the full unpickler, which runs whatever code the file holds; only for files you trust.
    """
    return _load(spec, torch.device(device), allow_unsafe_pickle, ())
