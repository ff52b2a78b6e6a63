"""The architecture behind a ``--model`` spec, read without loading (or downloading) any weights.

``ViT-L-14:openai`` plans as open_clip's ``ViT-L-14``; a catalog release (``hf-hub:chs20/fare4-clip``,
``simclip4=FILE``) as its base architecture; ``tiny-clip`` as ``simclip-tiny``; ``random:ARCH@PX`` as that
variant; a run directory, an encoder file or an open_clip export folder from the architecture they record. An
``hf-hub:`` repository outside the catalog is read from the Hugging Face cache (its ``open_clip_config.json``)
when it is there; otherwise the plan cannot know it offline and says so.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import open_clip

from simclip_bench.errors import UserError
from simclip_bench.models.architectures import checkpoint_config
from simclip_bench.models.builtin import BUILTIN_MODELS, register_model_configs
from simclip_bench.models.checkpoint import ENCODER_FILENAME, read_safetensors_metadata
from simclip_bench.models.known_checkpoints import known_by_name, known_by_spec
from simclip_bench.models.random_init import is_random_spec, parse_random_spec, register_variant
from simclip_bench.models.spec_syntax import HF_HUB, parse_model_spec

_registered_dir: Path | None = None


@dataclass(frozen=True)
class PlannedArchitecture:
    """The open_clip config name the plan counts on, and where it was read from."""

    config: str
    source: str


def planned_architecture(spec: str) -> PlannedArchitecture:
    """The architecture of ``spec`` (see the module docstring); UserError when it cannot be known offline."""
    register_model_configs()
    text = str(spec).strip()
    if is_random_spec(text):
        return PlannedArchitecture(register_variant(parse_random_spec(text)), "random init")
    if text in BUILTIN_MODELS:
        return PlannedArchitecture(BUILTIN_MODELS[text].arch, "built-in")
    known = known_by_spec(text)
    if known is not None:
        return PlannedArchitecture(checkpoint_config(known), f"catalog: {known.name}")
    parsed = parse_model_spec(text)
    if parsed.kind == "vision-tower":
        release = known_by_name(parsed.base or "")
        return planned_architecture(release.base_spec if release else parsed.base or "")
    path = Path(text).expanduser()
    if parsed.kind in ("path", "arch-tag") and path.exists():
        return _from_path(path)
    if parsed.kind == "arch-tag":
        if parsed.arch not in open_clip.list_models():
            raise UserError(f"unknown open_clip architecture {parsed.arch!r} in {text!r}")
        return PlannedArchitecture(parsed.arch, "open_clip config")
    if parsed.kind == "hf-hub":
        return _from_hub(text[len(HF_HUB):])
    raise UserError(f"cannot tell the architecture of {text!r} to plan it; give ARCH:TAG, a catalog model, a run "
                    "directory, or random:ARCH")


def _from_path(path: Path) -> PlannedArchitecture:
    if path.is_dir() and (path / "config.json").is_file():
        saved = json.loads((path / "config.json").read_text())
        if saved.get("arch"):
            return PlannedArchitecture(saved["arch"], f"{path}/config.json")
        if saved.get("base_model"):
            return planned_architecture(saved["base_model"])
    encoder = path / ENCODER_FILENAME if path.is_dir() else path
    if encoder.is_file() and encoder.suffix == ".safetensors":
        meta = read_safetensors_metadata(encoder)
        if meta.get("arch") in open_clip.list_models():
            return PlannedArchitecture(meta["arch"], str(encoder))
        if meta.get("base_model"):
            return planned_architecture(meta["base_model"])
    if path.is_dir() and (path / "open_clip_config.json").is_file():
        return _register(json.loads((path / "open_clip_config.json").read_text())["model_cfg"], path.name,
                         str(path / "open_clip_config.json"))
    raise UserError(f"cannot tell the architecture of {path} to plan it; pass ARCH:{path}")


def _from_hub(repo: str) -> PlannedArchitecture:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "open_clip_config.json")
    if not isinstance(cached, str):
        raise UserError(f"cannot plan hf-hub:{repo} offline: its architecture is in the repository's "
                        "open_clip_config.json, which is not in the Hugging Face cache; plan its architecture "
                        "instead, e.g. --model random:ViT-L-14")
    return _register(json.loads(Path(cached).read_text())["model_cfg"], repo.replace("/", "--"), f"hf-hub:{repo}")


def _register(model_cfg: dict, name: str, source: str) -> PlannedArchitecture:
    """Make a config read from a file known to open_clip under a name of its own, for counting."""
    global _registered_dir
    if _registered_dir is None:
        _registered_dir = Path(tempfile.mkdtemp(prefix="simclip-plan-configs-"))
    config = f"planned-{name}"
    (_registered_dir / f"{config}.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(_registered_dir)
    return PlannedArchitecture(config, source)
