"""Hub models on a machine without a connection: the cache when the files are there, else one line at once.

No test reaches the network: "offline" is either HF_HUB_OFFLINE=1 (conftest) or a hub endpoint on a
closed local port, which refuses the connection at once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.models import hub
from simclip_bench.models.export import export
from simclip_bench.models.spec import load_model

CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens on it here


def test_an_unreachable_hub_fails_at_once_in_one_whole_line_naming_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=CLOSED_PORT, HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "simclip_bench", "eval", "--model", "ViT-B-32:openai",
                           "--n-samples", "2", "--out", "out"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines[:5]
    line = lines[0]
    assert line.startswith("simclip: error: ViT-B-32:openai: this machine is offline (127.0.0.1:9 cannot be reached")
    assert "--model ViT-B-32-quickgelu:/path/to/open_clip_model.safetensors" in line  # openai weights: QuickGELU
    assert str(tmp_path / "hf-home") in line and line.endswith("point HF_HOME at it")
    assert not (tmp_path / "out").exists()


def _cache_repo(cache, repo_id: str, folder) -> None:
    """``folder``'s files as the cached snapshot of hub repository ``repo_id`` (huggingface_hub's layout)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in folder.iterdir():
        shutil.copy(f, snapshot / f.name)


def test_offline_a_cached_hub_model_loads_and_an_uncached_one_gets_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert hub.offline_reason() == "HF_HUB_OFFLINE=1 is set"  # conftest
    export("tiny-clip", "open_clip", tmp_path / "exported")
    cache = tmp_path / "cache"
    _cache_repo(cache, "someone/tiny-clip", tmp_path / "exported")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    loaded = load_model("hf-hub:someone/tiny-clip")
    assert loaded.checkpoint_hash == load_model("tiny-clip").checkpoint_hash

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--model", "hf-hub:chs20/fare2-clip", "--out", "out"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "hf-hub:chs20/fare2-clip: this machine is offline (HF_HUB_OFFLINE=1 is set)" in lines[0]
    assert "'hf download chs20/fare2-clip --local-dir DIR') and pass the folder: --model DIR" in lines[0]


@pytest.mark.parametrize("variable", ["HF_ENDPOINT", "HTTPS_PROXY"])
def test_a_hub_that_refuses_the_connection_is_offline(variable, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, CLOSED_PORT)
    hub.offline_reason.cache_clear()
    try:
        assert hub.offline_reason().startswith("127.0.0.1:9 cannot be reached")
    finally:
        hub.offline_reason.cache_clear()


def test_loading_a_llava_shows_no_loading_bar_and_no_load_report(tmp_path, capfd):
    """transformers draws a "Loading weights" bar and logs a report of unexpected keys; neither reaches the
    screen (the progress lines and one error line are the CLI's), and its bars are on again afterwards."""
    import torch
    from safetensors.torch import load_file, save_file
    from test_vlm_llava import tiny_llava, tiny_tokenizer
    from transformers.utils import logging as hf_logging

    from simclip_bench.vlm.load import load_vlm

    tiny_llava().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["not_a_llava_key.weight"] = torch.zeros(2)  # an unexpected key: transformers reports it
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    capfd.readouterr()
    load_vlm(f"llava:{tmp_path}", "native")
    out, err = capfd.readouterr()
    assert "Loading weights" not in err + out and "UNEXPECTED" not in err + out and "LOAD REPORT" not in err + out
    assert hf_logging.is_progress_bar_enabled()
