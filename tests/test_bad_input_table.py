"""The bad-input table of docs/reliability.md is a specification: every row is run here, as written.

Each row runs in a fresh folder that holds only the fixture files below (as in a fresh clone:
no runs/, no results). The command must exit with code 2, print exactly one line, starting with
"simclip: error:" and containing the row's answer, show no traceback, and write no file.
"""
from __future__ import annotations

import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from _bomb_png import write_bomb_png
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.models.checkpoint import ENCODER_FILENAME, ENCODER_FORMAT

TABLE_FILE = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
TABLE_HEADING = "## Bad input"
runner = CliRunner()


def bad_input_rows(readme: Path = TABLE_FILE) -> list[tuple[str, str]]:
    """(command, answer) for each row of the table under ``TABLE_HEADING``: both cells in backticks."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(TABLE_HEADING)
    end = text.find("\n#", start + len(TABLE_HEADING))
    section = text[start:end if end != -1 else len(text)]
    row = re.compile(r"^\|\s*`(simclip [^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*$")
    return [m.groups() for line in section.splitlines() if (m := row.match(line))]


class _WritesAFile:
    """Unpickling this object creates ``pwned`` in the working folder: what a hostile checkpoint does."""

    def __reduce__(self):
        return (Path.write_text, (Path("pwned"), "owned"))


def _make_fixtures(folder: Path) -> None:
    """The files the table's commands name, each bad in one way."""
    (folder / "empty").mkdir()
    (folder / "flat").mkdir()  # images, but no class sub-folders
    Image.new("RGB", (8, 8), (10, 200, 10)).save(folder / "flat" / "a.png")
    (folder / "one-class" / "only").mkdir(parents=True)  # a valid ImageFolder of a single class
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "one-class" / "only" / "a.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    (folder / "a-file").write_text("a file where a folder belongs\n")
    Image.fromarray(np.full((8, 8), 255.0, np.float32)).save(folder / "hdr.tif")  # float, but 0..255
    (folder / "no-names.txt").write_text("\n")
    (folder / "res").mkdir()
    (folder / "res" / "results.csv").write_text("model,value\n")
    (folder / "bad.toml").write_text("steps = [\n")
    (folder / "unknown.yaml").write_text("stepz: 3\n")
    (folder / "images").mkdir()
    Image.new("RGB", (16, 16)).save(folder / "images" / "ok.png")
    (folder / "images" / "escape.csv").write_text("path\nok.png\n../../etc/passwd\n")
    (folder / "damaged-run").mkdir()
    (folder / "damaged-run" / "config.json").write_text('{"model": "tiny-clip", "steps": 3')  # cut short
    with open(folder / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _WritesAFile()}, f, protocol=2)
    # vision-tower files (--model BASE=FILE), each wrong in one way
    torch.save({"conv1.weight": torch.zeros(2)}, folder / "tower-partial.pt")
    torch.save({"visual.conv1.weight": torch.zeros(2), "token_embedding.weight": torch.zeros(2)},
               folder / "whole-clip.pt")
    torch.save([torch.zeros(2)], folder / "tensor-list.pt")
    # stores --out cannot take: one written before measurement identities, one whose header line was cut
    (folder / "old-store").mkdir()
    (folder / "old-store" / "samples.csv").write_text(
        "run_id,model,checkpoint_hash,task,dataset,sample_id,attack,setting\nr,tiny-clip,h,zeroshot,shapes,0,none,s\n")
    (folder / "old-vlm-store").mkdir()
    (folder / "old-vlm-store" / "vlm_samples.csv").write_text(
        "run_id,model,checkpoint_hash,task,dataset,sample_id,setting\n")
    (folder / "cut-store").mkdir()
    (folder / "cut-store" / "samples.csv").write_text("run_id,model,checkpoint_ha")
    (folder / "self-base").mkdir()  # an encoder whose metadata names its own run folder as its base model
    save_file({"conv1.weight": torch.zeros(1)}, str(folder / "self-base" / ENCODER_FILENAME),
              metadata={"format": ENCODER_FORMAT, "base_model": "self-base", "arch": "simclip-tiny"})
    write_bomb_png(folder / "bomb.png")
    (folder / "llava-no-tokenizer").mkdir()  # what save_pretrained writes for the model, without its tokenizer
    (folder / "llava-no-tokenizer" / "config.json").write_text('{"model_type": "llava"}')
    (folder / "llava-no-tokenizer" / "model.safetensors").write_bytes(b"")


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


ROWS = bad_input_rows()


def test_the_table_is_found_and_covers_every_command():
    assert len(ROWS) >= 40, f"{TABLE_FILE.name} table under {TABLE_HEADING!r} has only {len(ROWS)} rows"
    commands = {shlex.split(command)[1] for command, _ in ROWS}
    assert commands >= {"train", "eval", "attack", "export", "leaderboard", "bench", "ls", "pretrain-vlm"}


@pytest.mark.parametrize("command, answer", ROWS, ids=[c for c, _ in ROWS])
def test_bad_input_gets_one_line_exit_code_2_and_writes_nothing(command, answer, tmp_path, monkeypatch):
    _make_fixtures(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    result = runner.invoke(app, shlex.split(command)[1:])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("simclip: error:"), result.output
    assert answer in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before, "a refused command must leave no file behind"


def test_gpu_out_of_memory_outside_the_batches_gets_one_line(monkeypatch, tmp_path):
    import torch

    import simclip_bench.jobs.zeroshot_eval as evaluate

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "run_eval", out_of_memory)
    result = runner.invoke(app, ["eval", "--n-samples", "4"])
    assert result.exit_code == 2
    assert result.output.strip() == ("simclip: error: out of GPU memory outside the batched work (e.g. loading the "
                                     "model); use a device with more memory or a smaller model")
