"""The axes of an evaluation grid: each ``--model`` and ``--dataset`` value counts once.

A value given twice (by hand, or through a ``--config`` list) is evaluated once, at its first position,
under its first spelling. A value that names an existing file or folder is compared by that file or
folder, so ``runs/a``, ``./runs/a/`` and its absolute path are one model; a registered name (``tiny-clip``,
``shapes``, ``cifar10``: the ``names`` the caller passes) is compared as written, as the loaders read it
before any path, and so is anything else (``ViT-L-14:openai``).
Eps values: :func:`simclip_bench.attacks.eps.unique_eps`.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Iterable


def _key(value: str, names: Collection[str]) -> str:
    text = value.strip()
    if text in names:
        return text
    try:
        path = os.path.expanduser(text)
        return os.path.realpath(path) if os.path.exists(path) else text
    except (OSError, ValueError):  # a name the system cannot even look up: compare it as written
        return text


def unique_values(values: Iterable[str], names: Collection[str] = ()) -> list[str]:
    """``values`` in first-seen order, each once; ``names`` are compared as written (see the module docstring)."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = _key(value, names)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept
