"""Argument errors start without the heavy libraries (torch, open_clip, transformers, matplotlib, pandas): they
are imported by the commands that run. (``simclip ls`` and every ``--help``: ``tests/test_architecture.py``.)

Checked deterministically from ``python -X importtime`` (which modules were imported), not by timing;
the times themselves are measured by ``benchmarks/startup_time.py`` (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "transformers", "matplotlib", "pandas")
COMMANDS = {
    "simclip eval --eps banana": ["eval", "--eps", "banana"],
    "simclip eval --eps 4/0 --norm l2": ["eval", "--eps", "4/0", "--norm", "l2"],
    "simclip eval --no-such-flag": ["eval", "--no-such-flag"],
    "simclip eval --threads 0": ["eval", "--threads", "0"],
}


def imported_modules(args: list[str], cwd) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level names of the modules ``python -m simclip_bench ARGS`` imported, and the finished process."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "simclip_bench", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    names = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
             if line.startswith("import time:")}
    return names, done


@pytest.mark.parametrize("name", COMMANDS)
def test_argument_errors_import_no_heavy_library(name, tmp_path):
    names, done = imported_modules(COMMANDS[name], tmp_path)
    assert "simclip_bench" in names, done.stderr[-2000:]
    assert done.returncode in (0, 2), done.stderr[-2000:]
    assert sorted(names & set(HEAVY)) == []
