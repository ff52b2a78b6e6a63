"""Where a command writes is checked before any model loads: ``--out`` under a file, or where nothing can be
written, is one line at once, and the check itself leaves nothing behind."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.cli.out_dirs import check_out_dir, check_out_file
from simclip_bench.errors import UserError

runner = CliRunner()


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_new_folder_an_empty_one_and_a_deep_new_one_pass_and_nothing_is_left_behind(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty", tmp_path / "a" / "b" / "c"):
        check_out_dir(out)
    assert _tree(tmp_path) == ["empty"]


def test_a_file_and_a_folder_under_a_file_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"^--out .*afile is a file; pass a directory$"):
        check_out_dir(tmp_path / "afile")
    with pytest.raises(UserError, match=r"afile is a file, so no folder can be made under it"):
        check_out_dir(tmp_path / "afile" / "sub" / "deeper", "--runs-dir")


def test_a_place_where_nothing_can_be_written_is_refused():
    with pytest.raises(UserError, match=r"--out /proc/simclip: cannot write in /proc"):  # even as root
        check_out_dir("/proc/simclip")


def test_an_output_file_needs_a_writable_folder_and_must_not_be_a_folder(tmp_path):
    check_out_file(tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="is a directory; pass a file name"):
        check_out_file(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"--out .*afile/w.safetensors: .*afile is a file"):
        check_out_file(tmp_path / "afile" / "w.safetensors")


@pytest.mark.parametrize("args", [
    ["eval", "--out", "afile/results"],
    ["eval", "--task", "captioning", "--out", "afile/results"],
    ["attack", "--out", "afile/attacks"],
    ["train", "--out", "afile/run"],
    ["bench", "--runs-dir", "afile/runs"],
    ["export", "tiny-clip", "--format", "hf", "--out", "afile/exported"],
])
def test_every_command_checks_its_out_before_any_model_loads(args, tmp_path, monkeypatch):
    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr("simclip_bench.models.spec.load_model", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "afile is a file, so no folder can be made under it" in result.output
