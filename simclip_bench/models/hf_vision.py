"""Convert an open_clip vision tower to a Hugging Face ``CLIPVisionModelWithProjection``.

LLaVA and most HF-based VLMs load their vision tower with ``CLIPVisionModel.from_pretrained``; this
module writes a robust encoder in exactly that form. The two implementations are the same network
(pre-norm ViT, class token, ``ln_pre``, fused vs split q/k/v), so the conversion is a renaming:

* ``class_embedding``, ``positional_embedding``, ``conv1`` -> ``embeddings.*``
* ``ln_pre`` -> ``pre_layrnorm`` (sic, HF's name)
* ``transformer.resblocks[i]``: ``ln_1``, ``attn.in_proj`` split into ``q/k/v_proj``, ``attn.out_proj``,
  ``ln_2``, ``mlp.c_fc`` / ``mlp.c_proj`` -> ``encoder.layers[i]``: ``layer_norm1``, ``self_attn.*``,
  ``layer_norm2``, ``mlp.fc1`` / ``mlp.fc2``
* ``ln_post`` -> ``post_layernorm``; ``proj`` (width x embed_dim) -> ``visual_projection`` (transposed)

OpenAI weights use QuickGELU (``x * sigmoid(1.702 x)``); HF calls it ``quick_gelu``. Features of
open_clip that HF CLIP cannot express (attentional pooling, layer scale, average pooling, patch
dropout, qk-norm and the other custom blocks, non-square inputs) raise :class:`UserError`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import publish_dir

HF_MODEL_CLASS = "CLIPVisionModelWithProjection"


def _activation_name(act: nn.Module) -> str:
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
    raise UserError(f"cannot export to HF CLIP: MLP activation {type(act).__name__} has no HF CLIP equivalent "
                    "(only GELU and QuickGELU)")


def _square(value, what: str) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise UserError(f"cannot export to HF CLIP: non-square {what} {a}x{b} (HF CLIP takes one side length)")
    return int(a)


def _check_representable(visual: nn.Module) -> None:
    """Raise UserError naming the first open_clip feature HF ``CLIPVisionModel`` cannot represent."""
    if not isinstance(visual, VisionTransformer):
        raise UserError(f"cannot export to HF CLIP: the vision tower is a {type(visual).__name__}, "
                        "only open_clip VisionTransformer towers (ViT-*) convert")
    problems = []
    if getattr(visual, "attn_pool", None) is not None:
        problems.append("attentional pooling (CoCa-style attn_pool)")
    if visual.pool_type != "tok":
        problems.append(f"pool_type {visual.pool_type!r} (HF pools the class token)")
    if not isinstance(visual.patch_dropout, nn.Identity):
        problems.append("patch dropout")
    if isinstance(visual.ln_pre, nn.Identity):
        problems.append("no ln_pre (no_ln_pre=True)")
    if visual.proj is None:
        problems.append("no output projection (proj is None)")
    for i, block in enumerate(visual.transformer.resblocks):
        if not isinstance(block, ResidualAttentionBlock) or not isinstance(block.attn, nn.MultiheadAttention):
            problems.append(f"custom attention block {type(block).__name__} (qk-norm / scaled cosine / scale-* "
                            "options)")
            break
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            problems.append("layer scale (ls_init_value)")
            break
        if block.attn.in_proj_bias is None or hasattr(block, "ln_1_kv"):
            problems.append(f"attention of block {i} without q/k/v bias or with cross-attention")
            break
    if problems:
        raise UserError(f"cannot export to HF CLIP: this open_clip vision tower uses {'; '.join(problems)}, "
                        "which HF CLIPVisionModel cannot represent; use --format open_clip")


def hf_vision_config(visual: nn.Module) -> CLIPVisionConfig:
    """The ``CLIPVisionConfig`` of the HF model that ``visual`` (an open_clip VisionTransformer) converts to."""
    _check_representable(visual)
    blocks = visual.transformer.resblocks
    first = blocks[0]
    eps = {float(ln.eps) for b in blocks for ln in (b.ln_1, b.ln_2)} | {float(visual.ln_pre.eps),
                                                                       float(visual.ln_post.eps)}
    if len(eps) != 1:
        raise UserError(f"cannot export to HF CLIP: layer norms use different eps values {sorted(eps)}")
    acts = {_activation_name(b.mlp.gelu) for b in blocks}
    if len(acts) != 1:
        raise UserError(f"cannot export to HF CLIP: blocks mix activations {sorted(acts)}")
    return CLIPVisionConfig(
        hidden_size=visual.transformer.width,
        intermediate_size=first.mlp.c_fc.out_features,
        projection_dim=visual.proj.shape[1],
        num_hidden_layers=len(blocks),
        num_attention_heads=first.attn.num_heads,
        image_size=_square(visual.image_size, "image size"),
        patch_size=_square(visual.patch_size, "patch size"),
        hidden_act=acts.pop(),
        layer_norm_eps=eps.pop(),
    )


def _copy(dst: nn.Parameter | torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:  # pragma: no cover - a config/weight mismatch is a bug here, not user input
        raise RuntimeError(f"shape mismatch {tuple(dst.shape)} vs {tuple(src.shape)}")
    dst.data.copy_(src.detach().to(dst.dtype))


def _copy_layer_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    _copy(dst.weight, src.weight)
    _copy(dst.bias, src.bias)


def _copy_linear(dst: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    _copy(dst.weight, weight)
    _copy(dst.bias, bias)


@torch.no_grad()
def open_clip_to_hf_vision(visual: nn.Module) -> CLIPVisionModelWithProjection:
    """Convert an open_clip ``VisionTransformer`` to an HF ``CLIPVisionModelWithProjection`` (float32, eval mode).

    ``hf(pixel_values).image_embeds`` equals ``visual(pixel_values)`` and ``hidden_states[k]`` equals the
    tokens after block ``k-1`` of open_clip, for the same normalised input. Raises UserError for
    towers HF CLIP cannot represent.
    """
    config = hf_vision_config(visual)
    hf = CLIPVisionModelWithProjection(config).float().eval()
    vm = hf.vision_model
    _copy(vm.embeddings.class_embedding, visual.class_embedding)
    _copy(vm.embeddings.patch_embedding.weight, visual.conv1.weight)
    _copy(vm.embeddings.position_embedding.weight, visual.positional_embedding)
    _copy_layer_norm(vm.pre_layrnorm, visual.ln_pre)
    width = config.hidden_size
    for block, layer in zip(visual.transformer.resblocks, vm.encoder.layers, strict=True):
        _copy_layer_norm(layer.layer_norm1, block.ln_1)
        w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
        for i, proj in enumerate((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)):
            _copy_linear(proj, w[i * width:(i + 1) * width], b[i * width:(i + 1) * width])
        _copy_linear(layer.self_attn.out_proj, block.attn.out_proj.weight, block.attn.out_proj.bias)
        _copy_layer_norm(layer.layer_norm2, block.ln_2)
        _copy_linear(layer.mlp.fc1, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        _copy_linear(layer.mlp.fc2, block.mlp.c_proj.weight, block.mlp.c_proj.bias)
    _copy_layer_norm(vm.post_layernorm, visual.ln_post)
    _copy(hf.visual_projection.weight, visual.proj.T)
    return hf


def image_processor(image_size: int, mean: Sequence[float], std: Sequence[float]) -> CLIPImageProcessor:
    """CLIP preprocessing as open_clip does it: bicubic resize of the shorter side, centre crop, normalise."""
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": int(image_size)}, resample=3,  # PIL bicubic
        do_center_crop=True, crop_size={"height": int(image_size), "width": int(image_size)},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[float(m) for m in mean], image_std=[float(s) for s in std], do_convert_rgb=True,
    )


def save_hf_vision(visual: nn.Module, out_dir: Path | str, image_size: int, mean: Sequence[float],
                   std: Sequence[float], extra_metadata: dict | None = None) -> Path:
    """Write ``visual`` as an HF model directory: weights (``save_pretrained``, safetensors), ``config.json``
    and a ``preprocessor_config.json`` of a ``CLIPImageProcessor`` with this size, mean and std.

    The directory loads with ``CLIPVisionModel.from_pretrained`` (the tower LLaVA uses) and
    ``CLIPVisionModelWithProjection.from_pretrained``. It is assembled in a temporary sibling and
    renamed into place, so a failure leaves nothing half-written. ``out_dir`` must not exist or be empty.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not an empty directory; choose another --out")
    hf = open_clip_to_hf_vision(visual)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        image_processor(image_size, mean, std).save_pretrained(tmp)
        if extra_metadata:
            (tmp / "simclip_export.json").write_text(json.dumps(extra_metadata, indent=2))
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bars_were_on:  # the caller's (or a later load's) bars are as they were
            hf_logging.enable_progress_bar()
    return out_dir

