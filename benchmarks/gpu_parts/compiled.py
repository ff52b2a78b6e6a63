"""Part ``compile``: the torch.compile rows of :mod:`gpu_parts.training` (bf16 + ``--compile`` for ViT-B-32 and
ViT-L-14), last and in a process of their own, as compiling is the slowest and least certain step. MFU comes from
the eager step's counted FLOPs, which ``gpu_check.py`` hands over in ``settings["known_flops"]``.
"""
from __future__ import annotations

from gpu_parts.common import Recorder
from gpu_parts.training import train_rows


def run(rec: Recorder, s: dict) -> None:
    """The torch.compile variants, in a process of their own: compiling is the slowest and least certain step."""
    flops = {tuple(k.split("|")[:1]) + tuple(int(v) for v in k.split("|")[1:]): tuple(f)
             for k, f in s.get("known_flops", {}).items()}
    train_rows(rec, s, s["sizes"]["compile"], flops)
