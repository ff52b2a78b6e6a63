"""Fingerprints of data on disk: what a stored result was computed from, cheaply enough to take on every run.

A dataset's identity (:mod:`simclip_bench.results.identity`) holds where it was read (the resolved folder)
and a fingerprint of what is there, so that two folders with one name, or one folder whose files changed,
never share stored rows:

* :func:`listing_fingerprint`: every file under a folder, by relative path and size in bytes (one ``stat``
  per file, no reads: seconds for ImageNet's 50 000 validation images). Modification times are left out,
  so a copy of the same files (another disk, a cluster's scratch) keeps its identity; an image re-encoded
  in place almost always changes size;
* :func:`files_fingerprint`: the full contents of small files that decide labels or prompts (annotation
  JSON, ``classnames.txt``, ``templates.txt``).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

ID_LENGTH = 16  # hex digits of a data_id


def listing_fingerprint(root: Path) -> str:
    """sha256 of (relative path, size) of every file under ``root``, in sorted order (hidden entries too)."""
    root = Path(root)
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:  # a dangling link: listed, without a size
                size = -1
            h.update(f"{path.relative_to(root).as_posix()}\0{size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 of the names and full contents of ``paths`` (small files: annotations, class names, templates)."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        h.update(f"{path.name}\0".encode("utf-8", "surrogateescape"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\n")
    return h.hexdigest()


def data_id(identity: dict) -> str:
    """The ``data_id`` of a dataset identity (a JSON-able dict of everything that decides what the samples are):
    the first :data:`ID_LENGTH` hex digits of the sha256 of its canonical JSON."""
    text = json.dumps({"data": identity}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]
