"""Where a command writes, checked before any model or dataset loads: a run must not fail at its first write,
after minutes of loading, because ``--out`` lies under a file or where this process cannot write."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from simclip_bench.errors import UserError


def _nearest_existing(path: Path) -> Path:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_out_dir(path: Path | str, option: str = "--out", shown: Path | str | None = None) -> None:
    """UserError unless ``path`` is a folder, or can become one, that this process can write into.

    Writability is tried, not read from the permission bits (which root ignores and a read-only filesystem
    does not show): a file is made and removed in the nearest folder that exists, so nothing is left behind.
    ``shown``: the value the user gave, when ``path`` is derived from it (the folder of an output file).
    """
    path = Path(path).expanduser()
    given = path if shown is None else shown
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{option} {given}: {path} is a file; pass a directory" if shown is not None
                            else f"{option} {path} is a file; pass a directory")
        existing = _nearest_existing(path)
    except OSError as e:  # a name the system cannot look up (too long)
        raise UserError(f"{option} {given} is not a usable folder name ({e.strerror or type(e).__name__})") from None
    if not existing.is_dir():
        raise UserError(f"{option} {given}: {existing} is a file, so no folder can be made under it; pass another "
                        "folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".simclip-write-check-")
    except OSError as e:
        raise UserError(f"{option} {given}: cannot write in {existing} ({e.strerror or type(e).__name__}); pass a "
                        "folder you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_out_file(path: Path | str, option: str = "--out") -> None:
    """UserError unless the file ``path`` can be written: not a folder, and its folder writable (see
    :func:`check_out_dir`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; pass a file name")
    check_out_dir(path.parent, option, shown=path)
