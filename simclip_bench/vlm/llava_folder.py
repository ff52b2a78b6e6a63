"""A ``--vlm llava:<model>`` source checked before transformers reads it.

transformers takes any string it cannot open as a folder for a hub id, so a mistyped path ends in a
repository-name validation error, and a folder that lacks its tokenizer fails deep inside the tokenizer
classes. Here a path that is no folder, and a folder without one of the parts a LLaVA needs (its config,
its weights, its tokenizer), get one line each that names what is missing.
"""
from __future__ import annotations

from pathlib import Path

from simclip_bench.errors import UserError

# What save_pretrained writes for a LLaVA and its tokenizer (or the hub repository holds), by part: any one name.
PARTS: dict[str, tuple[str, ...]] = {
    "config": ("config.json",),
    "weights": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json"),
    "tokenizer": ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model"),
}
GET_ONE = "e.g. 'hf download llava-hf/llava-1.5-7b-hf --local-dir DIR', then --vlm llava:DIR"


def _looks_like_path(model_id: str) -> bool:
    """A hub id is ``name`` or ``org/name``; a leading ``/``, ``.`` or ``~``, a backslash or a second ``/`` is
    a path."""
    return model_id.startswith(("/", ".", "~")) or "\\" in model_id or model_id.count("/") > 1


def check_llava_source(model_id: str) -> None:
    """UserError for a local ``model_id`` that is no folder, or a folder missing a part (see :data:`PARTS`); a
    hub id passes (the hub check comes when it is loaded)."""
    path = Path(model_id).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # a name the system cannot look up (too long): no folder
        is_dir = exists = False
    if not is_dir:
        if exists:
            raise UserError(f"--vlm llava:{model_id} is a file; pass the folder that holds the LLaVA ({GET_ONE})")
        if _looks_like_path(model_id):
            raise UserError(f"--vlm llava:{model_id}: no such folder; pass a folder that holds a transformers LLaVA "
                            f"(config.json, weights, tokenizer) or a hub id such as llava-hf/llava-1.5-7b-hf")
        return
    missing = [f"{part} ({' or '.join(names)})" for part, names in PARTS.items()
               if not any((path / name).is_file() for name in names)]
    if missing:
        raise UserError(f"--vlm llava:{model_id}: the folder has no {' and no '.join(missing)}; it must hold what "
                        f"save_pretrained writes for the model and for its tokenizer ({GET_ONE})")
