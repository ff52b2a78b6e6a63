"""Where a result came from: run id, time, git sha, package version."""
from __future__ import annotations

import datetime as _dt
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

from simclip_bench import __version__


def new_run_id() -> str:
    """A sortable, unique id: UTC timestamp plus 6 random hex digits."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the simclip-bench checkout in use, or ``"unknown"`` (e.g. installed from a wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version() -> str:
    return __version__
