"""What a ``--model`` value says by its text alone, before any file, registry or hub is consulted.

The forms (:data:`SPEC_KINDS`; :mod:`simclip_bench.models.spec` loads each):

* ``builtin``: a built-in name, e.g. ``tiny-clip``;
* ``hf-hub``: ``hf-hub:org/repo`` (open_clip's hub schema);
* ``arch-tag``: ``ARCH:TAG``, e.g. ``ViT-L-14:openai``, where TAG may also be a weights file;
* ``vision-tower``: ``BASE=FILE``, a vision-tower state dict on the model ``BASE``;
* ``path``: anything else (a run directory, an ``encoder.safetensors``, an open_clip folder).

Pure text, no torch: ``simclip ls models`` and the option checks parse specs without loading anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from simclip_bench.errors import UserError
from simclip_bench.models.builtin import BUILTIN_MODELS

HF_HUB = "hf-hub:"
SPEC_KINDS = ("builtin", "hf-hub", "arch-tag", "vision-tower", "path")
TOWER_SEP = "="


@dataclass(frozen=True)
class ParsedSpec:
    """A ``--model`` value split by its text alone.

    ``kind`` is one of :data:`SPEC_KINDS`. ``arch-tag`` (``ARCH:TAG``, with ``arch`` and ``tag`` set) may
    still name an existing file or folder, which the loader tries first; ``vision-tower`` (``BASE=FILE``,
    with ``base`` and ``weights`` set) too; ``path`` is anything else.
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
