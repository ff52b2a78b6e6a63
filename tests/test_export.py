"""``simclip export``: open_clip and HF exports load with their own libraries and give the same embeddings."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionModel, CLIPVisionModelWithProjection
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.models.checkpoint import save_safetensors_atomic
from simclip_bench.models.export import export
from simclip_bench.models.spec import load_model
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.loop import train

SMALL_ARCH = "simclip-test-vit-s"
SMALL_CFG = {"embed_dim": 24,
             "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
             "quick_gelu": True}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (very short) fine-tuning run of the built-in model, with the predictor head."""
    cfg = TrainConfig(objective="simclip", predictor=True, steps=2, batch_size=8, train_size=16, probe_size=0,
                      attack_steps=1, device="cpu", out=str(tmp_path_factory.mktemp("runs") / "tiny"))
    return train(cfg, log=lambda *_: None)


@pytest.fixture(scope="module")
def small_vit_spec(tmp_path_factory):
    """A random-init small open_clip ViT (QuickGELU), registered like a user's own config, as ARCH:FILE."""
    d = tmp_path_factory.mktemp("arch")
    (d / f"{SMALL_ARCH}.json").write_text(json.dumps(SMALL_CFG))
    open_clip.add_model_config(d / f"{SMALL_ARCH}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(SMALL_ARCH)
    with torch.no_grad():  # non-trivial layer norms, so a mis-mapped weight shows
        for m in clip.visual.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    save_safetensors_atomic(clip.state_dict(), d / "base.safetensors", {})
    return f"{SMALL_ARCH}:{d / 'base.safetensors'}"


def _images(tmp_path, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (57, 70, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _our_embeddings(spec, paths):
    loaded = load_model(spec, "cpu")
    t = pixel_transform(loaded.model.clip.visual.preprocess_cfg)
    x = torch.stack([t(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return loaded.model.encoder(x), x, loaded


def _embed_in_fresh_process(export_dir, paths):
    """Load the export the way a user would, in a Python without simclip_bench's registrations."""
    info = json.loads((export_dir / "export.json").read_text())
    code = textwrap.dedent(f"""
        import json, sys, torch, open_clip
        from PIL import Image
        info = json.loads(open({str(export_dir / 'export.json')!r}).read())
        if info["model_config"]:
            open_clip.add_model_config({str(export_dir)!r} + "/" + info["model_config"])
        model, _, preprocess = open_clip.create_model_and_transforms(
            info["model_name"], pretrained={str(export_dir)!r} + "/" + info["weights"])
        model.eval()
        x = torch.stack([preprocess(Image.open(p)) for p in {[str(p) for p in paths]!r}])
        with torch.no_grad():
            torch.save(model.encode_image(x), sys.argv[1])
    """)
    out = export_dir.parent / f"{export_dir.name}-emb.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, timeout=300)
    return torch.load(out, weights_only=True), info


def test_open_clip_export_of_a_run_loads_with_create_model_and_transforms(tiny_run, tmp_path):
    out = tmp_path / "oc"
    export(str(tiny_run), "open_clip", out)
    paths = _images(tmp_path)
    ours, _, _ = _our_embeddings(str(tiny_run), paths)
    theirs, info = _embed_in_fresh_process(out, paths)
    assert info["model_config"] == "simclip-tiny.json"  # unknown to stock open_clip, so it ships
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_open_clip_export_keeps_quick_gelu_of_a_random_init_vit(small_vit_spec, tmp_path):
    out = tmp_path / "oc-small"
    export(small_vit_spec, "open_clip", out)
    paths = _images(tmp_path)
    ours, _, _ = _our_embeddings(small_vit_spec, paths)
    theirs, info = _embed_in_fresh_process(out, paths)
    assert json.loads((out / info["model_config"]).read_text())["quick_gelu"] is True
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_export_drops_the_predictor_head(tiny_run, tmp_path):
    from safetensors import safe_open

    export(str(tiny_run), "open_clip", tmp_path / "oc")
    with safe_open(str(tmp_path / "oc" / "open_clip_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("predictor" in k for k in keys) and any(k.startswith("visual.") for k in keys)


@pytest.mark.parametrize("which", ["tiny_run", "small_vit_spec"])
def test_hf_export_matches_the_open_clip_tower(which, request, tmp_path):
    spec = str(request.getfixturevalue(which))
    out = tmp_path / "hf"
    export(spec, "hf", out)
    paths = _images(tmp_path)
    ours, x, loaded = _our_embeddings(spec, paths)
    enc = loaded.model.encoder
    pixel_values = (x - enc.mean) / enc.std  # the same normalised input
    visual = loaded.model.clip.visual
    n = len(visual.transformer.resblocks)
    with torch.no_grad():
        tokens = visual.forward_intermediates(pixel_values, indices=[n - 2], output_fmt="NLC",
                                              output_extra_tokens=True, intermediates_only=True)
        penultimate = torch.cat([tokens["image_intermediates_prefix"][0], tokens["image_intermediates"][0]], dim=1)
        tower = CLIPVisionModel.from_pretrained(out).eval()(pixel_values=pixel_values, output_hidden_states=True)
        projected = CLIPVisionModelWithProjection.from_pretrained(out).eval()(pixel_values=pixel_values)
    torch.testing.assert_close(projected.image_embeds, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tower.hidden_states[-2], penultimate, atol=1e-5, rtol=1e-5)
    ln_post_cls = visual.ln_post(tower.last_hidden_state[:, 0])
    torch.testing.assert_close(tower.pooler_output, ln_post_cls, atol=1e-5, rtol=1e-5)


def test_cli_export_refuses_bad_format_and_existing_output_with_one_line(tiny_run, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--format must be one of open_clip, hf" in bad.output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "f").write_text("mine")
    taken = runner.invoke(app, ["export", str(tiny_run), "--format", "hf", "--out", str(tmp_path / "taken")])
    assert taken.exit_code == 2 and "not an empty directory" in taken.output
    assert not (tmp_path / "x").exists() and [p.name for p in (tmp_path / "taken").iterdir()] == ["f"]
