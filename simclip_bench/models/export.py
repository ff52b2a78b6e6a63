"""``simclip export``: a fine-tuned encoder as an open_clip checkpoint or an HF ``CLIPVisionModel`` directory.

* ``open_clip``: ``OUT/open_clip_model.safetensors`` (the full CLIP: the fine-tuned vision tower and the
  base model's text tower), ``OUT/open_clip_config.json`` (open_clip's ``local-dir:`` schema, with the
  preprocessing) and, for an architecture stock open_clip does not ship (such as the built-in tiny one, or
  a QuickGELU variant without a ``-quickgelu`` config), its model-config JSON named after it, for
  ``open_clip.add_model_config``. ``OUT/export.json`` says how to load it::

      open_clip.add_model_config("OUT/simclip-tiny.json")      # only when that file is there
      model, _, preprocess = open_clip.create_model_and_transforms("simclip-tiny",
                                                                    pretrained="OUT/open_clip_model.safetensors")

* ``hf``: a ``CLIPVisionModelWithProjection`` directory with a ``CLIPImageProcessor`` config
  (:func:`simclip_bench.models.hf_vision.save_hf_vision`); ``CLIPVisionModel.from_pretrained(OUT)`` gives
  the vision tower LLaVA uses.

Training-only parts (the predictor head of ``--predictor``) are not part of the encoder and never exported.
The activation is read from the model itself: OpenAI weights use QuickGELU, and the exported config says so.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import open_clip
from open_clip.transformer import QuickGELU

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import _publish, publish_dir, save_safetensors_atomic, state_dict_sha256
from simclip_bench.models.hf_vision import save_hf_vision
from simclip_bench.models.spec import LoadedModel, load_model

FORMATS = ("open_clip", "hf")
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
EXPORT_INFO = "export.json"
STOCK_CONFIG_DIR = Path(open_clip.__file__).resolve().parent / "model_configs"


def uses_quick_gelu(visual) -> bool:
    return any(isinstance(m, QuickGELU) for m in visual.modules())


def _open_clip_name(loaded: LoadedModel) -> tuple[str, dict, bool]:
    """(name to load the export under, its model config, whether that config must ship with the export)."""
    arch = loaded.arch
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UserError(f"cannot export {loaded.spec!r} to open_clip: its architecture {arch!r} has no open_clip "
                        "model config here; export with --format hf, or fine-tune an ARCH:TAG model")
    cfg = json.loads(json.dumps(cfg))
    quick = uses_quick_gelu(loaded.model.clip.visual)
    name = arch
    if quick and not cfg.get("quick_gelu", False):
        cfg["quick_gelu"] = True
        name = f"{arch}-quickgelu"
    elif not quick and cfg.get("quick_gelu", False):
        cfg["quick_gelu"] = False
        name = f"{arch}-gelu"
    stock = (STOCK_CONFIG_DIR / f"{name}.json").is_file()
    return name, cfg, not stock


def _fresh_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))


def _write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    _publish(tmp, path)


def export_open_clip(loaded: LoadedModel, out: Path) -> dict:
    """Write the open_clip export of ``loaded`` to the new directory ``out``; returns the export info."""
    name, model_cfg, ship_config = _open_clip_name(loaded)
    clip = loaded.model.clip
    preprocess = dict(getattr(clip.visual, "preprocess_cfg", None) or {})
    tmp = _fresh_dir(out)
    try:
        state = {k: v.float() for k, v in clip.state_dict().items()}
        save_safetensors_atomic(state, tmp / OPEN_CLIP_WEIGHTS, {"format": "open_clip", "arch": name})
        _write_json(tmp / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": _jsonable(preprocess)})
        if ship_config:
            _write_json(tmp / f"{name}.json", model_cfg)
        info = {"format": "open_clip", "model_name": name, "weights": OPEN_CLIP_WEIGHTS,
                "model_config": f"{name}.json" if ship_config else None, "source": loaded.spec,
                "vision_sha256": state_dict_sha256(clip.visual.state_dict()),
                "load": (f"open_clip.add_model_config('{out / f'{name}.json'}'); " if ship_config else "")
                + f"open_clip.create_model_and_transforms('{name}', pretrained='{out / OPEN_CLIP_WEIGHTS}')"}
        _write_json(tmp / EXPORT_INFO, info)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def export_hf(loaded: LoadedModel, out: Path) -> dict:
    """Write the HF ``CLIPVisionModelWithProjection`` export of ``loaded`` to the new directory ``out``."""
    visual = loaded.model.clip.visual
    enc = loaded.model.encoder
    info = {"format": "hf", "model_class": "CLIPVisionModelWithProjection", "source": loaded.spec,
            "vision_sha256": state_dict_sha256(visual.state_dict()),
            "load": f"transformers.CLIPVisionModel.from_pretrained('{out}')"}
    save_hf_vision(visual, out, loaded.model.image_size, enc.mean.flatten().tolist(), enc.std.flatten().tolist(),
                   extra_metadata=info)
    return info


def export(spec: str, fmt: str, out: Path, allow_unsafe_pickle: bool = False) -> dict:
    """Export the model ``spec`` (usually a run directory) in ``fmt`` (``open_clip`` | ``hf``) to ``out``;
    ``allow_unsafe_pickle`` (default False) is passed on to :func:`~simclip_bench.models.spec.load_model`."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty directory; choose another --out")
    loaded = load_model(spec, "cpu", allow_unsafe_pickle)
    return export_open_clip(loaded, out) if fmt == "open_clip" else export_hf(loaded, out)
