"""The catalog contract (timm style): every architecture of ``simclip ls models`` goes through the whole pipeline.

Each architecture of :data:`simclip_bench.models.architectures.CATALOG_ARCHITECTURES` is built from its open_clip
config with random weights (``random:CONFIG@PX``, nothing downloaded) and must, in this order:

1. survive a few APGD-CE iterations on its zero-shot head, inside the eps-ball and [0,1], every gradient
   evaluation counted;
2. pass the masking checks (deterministic outputs, logits not probabilities, input gradients everywhere);
3. export to open_clip and reload through open_clip's own API (what ``export.json`` tells users) with the same
   vision tower;
4. export to HF ``CLIPVisionModel`` and, swapped into a LLaVA-shaped model (the tower's real widths and depth,
   a language model of LLaVA-1.5-7B's widths with 2 layers), generate text and pass gradients to the image;
   or, where the catalog says it cannot, be refused with one line saying why;
5. take one training step (``TrainSession``, Sim-CLIP-anchored with PGD-1, batch 2) with finite loss.

Only the resolution is reduced where the real one is too slow on a CPU (:data:`CONTRACT_PX`); widths, depth and
code path are the architecture's own. ViT-H's training step at full depth peaks near 14 GiB here.
"""
from __future__ import annotations

import gc
import json
import time

import open_clip
import pytest
import torch

from simclip_bench.models.architectures import CATALOG_ARCHITECTURES, CatalogArchitecture
from simclip_bench.models.builtin import register_model_configs

# Resolution each architecture runs at here (its real size where that is quick); the patch size divides it.
CONTRACT_PX = {"simclip-tiny": 32, "ViT-B/32 (OpenAI)": 224, "ViT-B/32 (LAION)": 224, "ViT-B/16 (LAION)": 112,
               "ViT-L/14 (OpenAI)": 56, "ViT-L/14-336 (OpenAI)": 56, "ViT-H/14 (LAION)": 56, "ΔCLIP-H/14-336": 56,
               "ConvNeXt-B (LAION)": 64}
EPS = 4 / 255
CLASSES = ("circle", "square", "triangle", "star")
# What the converter's one-line refusal names, for the architectures the catalog says cannot go to HF CLIP.
HF_REFUSAL = {"ΔCLIP-H/14-336": ("no ln_pre", "pool_type 'avg'"), "ConvNeXt-B (LAION)": ("TimmModel",)}
QUICK: set[str] = set()  # even the tiny one takes 40 s (the LLaVA-shaped model has 0.4 B parameters)


def _params():
    return [pytest.param(name, id=name, marks=() if name in QUICK else pytest.mark.slow)
            for name in CATALOG_ARCHITECTURES]


def test_every_catalog_architecture_has_a_contract_size():
    assert set(CONTRACT_PX) == set(CATALOG_ARCHITECTURES)
    assert set(HF_REFUSAL) == {name for name, arch in CATALOG_ARCHITECTURES.items() if arch.hf_export}
    register_model_configs()
    for name, arch in CATALOG_ARCHITECTURES.items():
        assert arch.config in open_clip.list_models(), name


def test_every_model_of_ls_models_has_its_architecture_in_the_catalog():
    from simclip_bench.models.known_checkpoints import KNOWN_CHECKPOINTS

    on_an_architecture = {c for arch in CATALOG_ARCHITECTURES.values() for c in arch.checkpoints}
    assert on_an_architecture == set(KNOWN_CHECKPOINTS)
    assert "simclip-tiny" in {arch.config for arch in CATALOG_ARCHITECTURES.values()}


def _spec(arch: CatalogArchitecture) -> str:
    px = CONTRACT_PX[arch.name]
    return f"random:{arch.config}" + (f"@{px}" if px != arch.image_size else "")


def _head(loaded):
    from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier, build_text_classifier

    weights = build_text_classifier(loaded.model, CLASSES, ("a photo of a {}.",))
    return ZeroShotClassifier(loaded.model.encoder, weights).eval()


def _apgd(loaded, x):
    from simclip_bench.attacks.ensemble import run_ensemble
    from simclip_bench.attacks.registry import resolve_attack

    head = _head(loaded)
    with torch.no_grad():
        labels = head(x).argmax(-1)  # every image clean-correct: every one is attacked
    out = run_ensemble(resolve_attack("apgd-ce").with_iterations(3), head, x, labels, EPS, batch_size=2)
    assert (out.x_adv - x).abs().max() <= EPS + 1e-5 and out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    # 1 gradient evaluation at the start + 1 per iteration, fewer only for an image fooled early
    assert ((out.grad_evals >= 1) & (out.grad_evals <= 4)).all(), out.grad_evals
    assert (out.grad_evals[out.robust] == 4).all()


def _masking(loaded, x):
    from simclip_bench.attacks.checks import preflight_checks

    head = _head(loaded)
    with torch.no_grad():
        labels = head(x).argmax(-1)
    assert preflight_checks(head, x, labels) == []


def _open_clip_export(loaded, out):
    from simclip_bench.models.export import export_open_clip

    info = export_open_clip(loaded, out)
    if info["model_config"]:  # the recipe export.json gives users
        open_clip.add_model_config(out / info["model_config"])
    clip = open_clip.create_model(info["model_name"], pretrained=str(out / info["weights"])).eval()
    pixels = torch.rand(2, 3, loaded.model.image_size, loaded.model.image_size)
    with torch.no_grad():
        assert torch.allclose(clip.visual(pixels), loaded.model.clip.visual(pixels), atol=1e-4)


def _llava_shaped(vision_config):
    """LLaVA-1.5-7B's language-model widths (4096, MLP 11008, 32 heads) with 2 layers, around ``vision_config``."""
    from test_vlm_llava import WORDS
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=5 + len(WORDS), hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision_config, text_config=text, image_token_id=4, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu")
    return LlavaForConditionalGeneration(config).eval()


def _hf_export(arch: CatalogArchitecture, loaded, out):
    from test_vlm_llava import tiny_tokenizer
    from transformers import CLIPVisionModel

    from simclip_bench.errors import UserError
    from simclip_bench.models.export import export_hf
    from simclip_bench.vlm.llava import LlavaVLM, swap_vision_tower

    if arch.hf_export:  # the catalog says it cannot: one line that says why
        with pytest.raises(UserError) as refused:
            export_hf(loaded, out)
        message = str(refused.value)
        assert "\n" not in message and message.startswith("cannot export")
        assert all(words in message for words in HF_REFUSAL[arch.name]), message
        assert not out.exists() or not any(out.iterdir())
        return
    export_hf(loaded, out)
    tower = CLIPVisionModel.from_pretrained(out).eval()
    enc = loaded.model.encoder
    x = torch.rand(2, 3, loaded.model.image_size, loaded.model.image_size)
    with torch.no_grad():
        pooled = tower(pixel_values=(x - enc.mean) / enc.std).pooler_output
        visual = loaded.model.clip.visual
        tokens = visual.transformer(visual._embeds((x - enc.mean) / enc.std))
        assert torch.allclose(pooled, visual.ln_post(tokens[:, 0]), atol=1e-3)
    model = _llava_shaped(tower.config)
    swap_vision_tower(model, tower)
    vlm = LlavaVLM(model, tiny_tokenizer(), name="llava-shaped", mean=enc.mean.flatten().tolist(),
                   std=enc.std.flatten().tolist())
    assert len(vlm.generate(x, [vlm.caption_prompt()] * 2, max_new_tokens=2)) == 2
    xg = x.clone().requires_grad_(True)
    vlm.loss(xg, [vlm.caption_prompt()] * 2, ["a red circle", "a blue square"]).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def _train_step(spec: str):
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.session import TrainSession

    cfg = TrainConfig(model=spec, steps=2, batch_size=2, train_size=2, probe_size=0, attack_steps=1, warmup_steps=0,
                      lr=1e-5, device="cpu", out=None)
    session = TrainSession(cfg, log=lambda *_: None)
    before = next(session.encoder.parameters()).detach().clone()
    report = session.step()
    assert all(torch.isfinite(torch.tensor(v)) for v in report.values()), report
    assert not torch.equal(before, next(session.encoder.parameters()).detach())


@pytest.mark.parametrize("name", _params())
def test_architecture_passes_the_contract(name, tmp_path):
    from simclip_bench.models.spec import load_model

    arch = CATALOG_ARCHITECTURES[name]
    spec = _spec(arch)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_model(spec, "cpu")
    times["build"] = time.perf_counter() - t0
    x = torch.rand(2, 3, loaded.model.image_size, loaded.model.image_size, generator=torch.Generator().manual_seed(0))
    for step, run in (("apgd", lambda: _apgd(loaded, x)), ("masking", lambda: _masking(loaded, x)),
                      ("open_clip", lambda: _open_clip_export(loaded, tmp_path / "open_clip")),
                      ("hf", lambda: _hf_export(arch, loaded, tmp_path / "hf"))):
        t = time.perf_counter()
        run()
        times[step] = time.perf_counter() - t
    loaded = None  # free the model before the training step
    gc.collect()
    t = time.perf_counter()
    _train_step(spec)
    times["train"] = time.perf_counter() - t
    print(json.dumps({"architecture": name, "spec": spec, "seconds": {k: round(v, 1) for k, v in times.items()}}))


def test_ls_models_shows_every_architecture_and_what_it_cannot_do():
    from typer.testing import CliRunner

    from simclip_bench.cli import app

    output = CliRunner().invoke(app, ["ls", "models", "--plain"]).output
    for arch in CATALOG_ARCHITECTURES.values():
        line = next(ln for ln in output.splitlines() if ln.startswith(f"architecture {arch.name}:"))
        assert arch.config in line
        assert (f"HF CLIPVisionModel export: no: {arch.hf_export}" in line) if arch.hf_export else \
            ("HF CLIPVisionModel export: yes" in line)
