"""open_clip vision tower -> HF CLIPVisionModelWithProjection: same network, same numbers."""
from __future__ import annotations

import json

import pytest
import torch
from open_clip.model import _build_vision_tower
from transformers import CLIPImageProcessor, CLIPVisionModel, CLIPVisionModelWithProjection

from simclip_bench.errors import UserError
from simclip_bench.models.hf_vision import open_clip_to_hf_vision, save_hf_vision

SMALL_VIT = {"image_size": 48, "patch_size": 16, "width": 96, "layers": 3, "head_width": 24, "mlp_ratio": 4.0}


def _small_vit(quick_gelu: bool, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return _build_vision_tower(embed_dim=40, vision_cfg={**SMALL_VIT, **overrides}, quick_gelu=quick_gelu).eval()


def _perturb_norms(visual: torch.nn.Module) -> None:
    """Random-init layer norms are (1, 0); make them non-trivial so a swapped mapping would show."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in visual.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=g))


def _towers():
    from simclip_bench.models.spec import load_model

    tiny = load_model("tiny-clip", "cpu").model.clip.visual
    small_quick = _small_vit(quick_gelu=True)
    small_gelu = _small_vit(quick_gelu=False)
    for v in (small_quick, small_gelu):
        _perturb_norms(v)
    return {"tiny-clip": tiny, "small-vit-quickgelu": small_quick, "small-vit-gelu": small_gelu}


TOWERS = _towers()


def _input(visual, n: int = 3) -> torch.Tensor:
    size = visual.image_size[0]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", list(TOWERS))
def test_projected_pooled_output_equals_open_clip_embedding(name):
    visual = TOWERS[name]
    hf = open_clip_to_hf_vision(visual)
    x = _input(visual)
    with torch.no_grad():
        expected = visual(x)
        got = hf(pixel_values=x).image_embeds
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(TOWERS))
def test_every_hidden_state_equals_open_clip_intermediate_tokens(name):
    visual = TOWERS[name]
    hf = open_clip_to_hf_vision(visual)
    x = _input(visual)
    n_layers = len(visual.transformer.resblocks)
    with torch.no_grad():
        out = visual.forward_intermediates(x, indices=list(range(n_layers)), output_fmt="NLC",
                                           output_extra_tokens=True, intermediates_only=True)
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(hidden) == n_layers + 1  # embeddings, then one per block
    for k in range(n_layers):
        tokens = torch.cat([out["image_intermediates_prefix"][k], out["image_intermediates"][k]], dim=1)
        torch.testing.assert_close(hidden[k + 1], tokens, atol=1e-5, rtol=1e-5)
    # LLaVA's feature layer: the penultimate hidden state
    penultimate = torch.cat([out["image_intermediates_prefix"][-2], out["image_intermediates"][-2]], dim=1)
    torch.testing.assert_close(hidden[-2], penultimate, atol=1e-5, rtol=1e-5)


def test_activation_follows_the_open_clip_tower():
    assert open_clip_to_hf_vision(TOWERS["small-vit-quickgelu"]).config.hidden_act == "quick_gelu"
    assert open_clip_to_hf_vision(TOWERS["small-vit-gelu"]).config.hidden_act == "gelu"


def test_config_carries_the_architecture():
    cfg = open_clip_to_hf_vision(TOWERS["small-vit-gelu"]).config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (96, 3, 4)
    assert (cfg.intermediate_size, cfg.projection_dim, cfg.image_size, cfg.patch_size) == (384, 40, 48, 16)


@pytest.mark.parametrize("overrides, named", [
    ({"ls_init_value": 0.1}, "layer scale"),
    ({"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2}, "attentional pooling"),
    ({"pool_type": "avg"}, "pool_type"),
    ({"patch_dropout": 0.5}, "patch dropout"),
    ({"no_ln_pre": True}, "ln_pre"),
    ({"qk_norm": True}, "custom attention block"),
    ({"image_size": (48, 32)}, "non-square"),
])
def test_unrepresentable_open_clip_features_raise_user_error(overrides, named):
    with pytest.raises(UserError, match=named):
        open_clip_to_hf_vision(_small_vit(quick_gelu=False, **overrides))


def test_a_resnet_tower_is_refused():
    resnet = _build_vision_tower(32, {"layers": (1, 1, 1, 1), "width": 16, "head_width": 16, "image_size": 32})
    with pytest.raises(UserError, match="ModifiedResNet"):
        open_clip_to_hf_vision(resnet)


def test_saved_directory_loads_as_the_llava_vision_tower_with_its_preprocessing(tmp_path):
    visual = TOWERS["small-vit-quickgelu"]
    out = save_hf_vision(visual, tmp_path / "hf", image_size=48, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    x = _input(visual)
    tower = CLIPVisionModel.from_pretrained(out).eval()
    with_proj = CLIPVisionModelWithProjection.from_pretrained(out).eval()
    reference = open_clip_to_hf_vision(visual)
    with torch.no_grad():
        ref = reference(pixel_values=x, output_hidden_states=True)
        got = tower(pixel_values=x, output_hidden_states=True)
        torch.testing.assert_close(got.hidden_states[-2], ref.hidden_states[-2], atol=1e-6, rtol=0)
        torch.testing.assert_close(with_proj(pixel_values=x).image_embeds, visual(x), atol=1e-5, rtol=1e-5)
    proc = CLIPImageProcessor.from_pretrained(out)
    assert proc.crop_size == {"height": 48, "width": 48} and proc.size == {"shortest_edge": 48}
    assert list(proc.image_mean) == [0.1, 0.2, 0.3] and list(proc.image_std) == [0.4, 0.5, 0.6]
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "quick_gelu"


def test_saving_leaves_transformers_progress_bars_as_they_were(tmp_path):
    """The export hides transformers' bars while it writes, and turns them back on: a later load in the same
    process (a test, a notebook) still shows or hides them as its caller chose."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    save_hf_vision(TOWERS["small-vit-gelu"], tmp_path / "hf", 48, (0.5,) * 3, (0.5,) * 3)
    assert hf_logging.is_progress_bar_enabled()


def test_saving_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        save_hf_vision(TOWERS["small-vit-gelu"], tmp_path / "taken", 48, (0.5,) * 3, (0.5,) * 3)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
