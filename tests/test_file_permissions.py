"""Files written atomically (temporary file + rename) get the permissions a plain ``open()`` would give them.

A temporary file is created private (0600); left so, an exported model could not be read by the other
users of a shared machine while its neighbours could. Every writer must respect the umask instead.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from simclip_bench.models.checkpoint import atomic_write_text, save_encoder
from simclip_bench.models.export import export


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_modes(tmp_path: Path) -> tuple[int, int]:
    """(file, folder) modes that a plain open() and mkdir() give under the current umask."""
    (tmp_path / "plain-dir").mkdir()
    with open(tmp_path / "plain-dir" / "plain-file", "w") as f:
        f.write("x")
    return _mode(tmp_path / "plain-dir" / "plain-file"), _mode(tmp_path / "plain-dir")


@pytest.mark.parametrize("fmt", ["hf", "open_clip"])
def test_exported_files_have_the_permissions_of_a_plain_open(tmp_path, umask, fmt):
    file_mode, dir_mode = _plain_modes(tmp_path)
    out = tmp_path / "exported"
    export("tiny-clip", fmt, out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert files and {p.name: oct(_mode(p)) for p in files} == {p.name: oct(file_mode) for p in files}
    assert oct(_mode(out)) == oct(dir_mode)


def test_encoder_and_result_files_have_the_permissions_of_a_plain_open(tmp_path, umask):
    file_mode, _ = _plain_modes(tmp_path)
    save_encoder(torch.nn.Linear(2, 2), tmp_path / "encoder.safetensors", "tiny-clip", "simclip-tiny")
    atomic_write_text(tmp_path / "results.csv", "a,b\n")
    assert oct(_mode(tmp_path / "encoder.safetensors")) == oct(file_mode)
    assert oct(_mode(tmp_path / "results.csv")) == oct(file_mode)
