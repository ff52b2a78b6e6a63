"""Paths listed in a manifest stay inside the folder they are read from (no path traversal).

A manifest (a training list ``.csv`` / ``.jsonl``, a Karpathy caption file, a VQA questions file)
names image files relative to a folder. An entry that leaves that folder -- through ``..``, through
a symbolic link inside it, or as an absolute path elsewhere -- is refused with one line naming the
manifest, the entry's position and the entry, before any image is read. Containment is checked on
resolved paths (``os.path.realpath``, as :meth:`pathlib.Path.resolve`: ``..`` and every symbolic link
followed) against the resolved folder, so a folder that is itself a symbolic link
(``val2014 -> /data/coco/val2014``) is fine, but a link inside it to elsewhere is not.

Absolute entries are allowed only where the format documents them: a training list may name images
anywhere by absolute path (``allow_absolute=True``), taken as given; its relative entries must still
stay inside the list's folder.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePath

from simclip_bench.errors import UserError


class ManifestFolder:
    """The folder a manifest's entries are relative to; :meth:`path` turns an entry into a checked path.

    Args:
        manifest: the manifest file, named in errors.
        folder: where relative entries are read from.
        allow_absolute: absolute entries are taken as given (else they must lie inside ``folder`` too).
    """

    def __init__(self, manifest: Path, folder: Path, allow_absolute: bool = False) -> None:
        self.manifest = Path(manifest)
        self.folder = Path(folder)
        self.allow_absolute = allow_absolute
        # Plain strings and os.path, not pathlib: a training list can hold millions of entries.
        self._root = os.path.realpath(self.folder)
        self._inside = self._root if self._root.endswith(os.sep) else self._root + os.sep
        self._parents: dict[str, str] = {}  # each sub-folder resolved once

    def path(self, entry: str | PurePath, where: str) -> Path:
        """The file ``entry`` names (``folder / entry``); UserError if it resolves outside the folder.

        ``where`` says where the entry is in the manifest, e.g. ``"line 12"`` or ``"images[3]"``.
        """
        text = os.fspath(entry)
        if "\x00" in text:  # no file name holds a NUL, and os.path.realpath raises ValueError on one
            raise UserError(f"{self.manifest} {where}: entry {text!r} contains a NUL character; it names no file")
        if self.allow_absolute and os.path.isabs(text):
            return Path(text)
        real = self._resolve(os.path.join(self.folder, text))  # an absolute entry replaces the folder
        if real != self._root and not real.startswith(self._inside):
            hint = "; list only files under that folder" + (", or give the file's absolute path"
                                                          if self.allow_absolute else "")
            raise UserError(f"{self.manifest} {where}: entry {text!r} points outside {self._root} (to {real}){hint}")
        return self.folder / text

    def _resolve(self, joined: str) -> str:
        """``os.path.realpath(joined)``, resolving each parent folder once and then only the file name."""
        head, name = os.path.split(joined)
        if name in ("", ".", ".."):
            return os.path.realpath(joined)
        parent = self._parents.get(head)
        if parent is None:
            parent = self._parents[head] = os.path.realpath(head)
        leaf = os.path.join(parent, name)
        return os.path.realpath(leaf) if os.path.islink(leaf) else leaf
