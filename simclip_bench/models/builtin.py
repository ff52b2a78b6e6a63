"""Built-in models: the tiny CLIP shipped with the package.

The architecture is an ordinary open_clip model config (``model_configs/simclip-tiny.json``)
registered with :func:`open_clip.add_model_config`, so the built-in model goes through exactly
the open_clip code path that ViT-L-14 does. Its weights (``weights/simclip-tiny.safetensors``)
are produced by ``simclip pretrain-builtin`` (contrastive pretraining on the generated shapes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "model_configs"
WEIGHTS_DIR = PACKAGE_DIR / "weights"

_registered = False


def register_model_configs() -> None:
    """Make the built-in architectures known to open_clip (idempotent). Every loader calls it before it asks
    open_clip for an architecture; this module itself imports no open_clip, so listing the models is fast."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model: an open_clip architecture plus shipped weights."""

    name: str
    arch: str
    weights: Path
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "tiny-clip": BuiltinModel(
        name="tiny-clip",
        arch="simclip-tiny",
        weights=WEIGHTS_DIR / "simclip-tiny.safetensors",
        description="Tiny CLIP (ViT 4x128, 32 px) pretrained contrastively on the built-in shapes data.",
    ),
}
DEFAULT_MODEL = "tiny-clip"
