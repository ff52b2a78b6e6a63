"""HF transformers LLaVA (``LlavaForConditionalGeneration``, e.g. ``llava-hf/llava-1.5-7b-hf``) behind the
:class:`~simclip_bench.vlm.base.VisionLanguageModel` interface, with a swappable vision tower.

**Swapping the tower.** Any open_clip ViT that simclip-bench loads (``ViT-L-14:openai``, a ``simclip train``
run, ``hf-hub:chs20/fare4-clip``, ...) is converted to an HF ``CLIPVisionModel``
(:func:`simclip_bench.models.hf_vision.open_clip_to_hf_vision`) and replaces ``model.vision_tower``. Nothing
else changes: the projector and the language model are LLaVA's, untouched (no retraining). Its width must
be LLaVA's vision width (1024 for LLaVA-1.5: a ViT-L/14).

**Which layer.** LLaVA reads the hidden states of one vision layer, ``config.vision_feature_layer`` (-2 for
LLaVA-1.5: the output of the penultimate transformer block, before ``post_layernorm``), and with strategy
``default`` drops the class token, so the projector gets one token per patch. The swapped tower is read the
same way: the conversion maps open_clip block *k* to HF hidden state *k+1*, so layer -2 of the converted
tower is the penultimate open_clip block of the robust encoder.

**Resolution (224 vs 336).** LLaVA-1.5's own tower is CLIP ViT-L/14 at 336 px (576 patch tokens); the
robust encoders of RobustVLM, FARE and Sim-CLIP are ViT-L/14 at 224 px. A swapped tower runs at its own
resolution: images are resized to 224 px and LLaVA sees 256 image tokens (its projector works per token,
so the count may change). For a like-for-like comparison, the baseline of a 224-px robust encoder is the
224-px OpenAI encoder swapped in the same way (``--model ViT-L-14:openai``), not LLaVA's native 336-px tower
(``--model native``), which is also available.

**Pixels.** Images come in [0,1]; the wrapper normalises with the tower's mean/std (OpenAI CLIP's for
LLaVA-1.5) and resizes nothing: callers pass images at ``image_size`` (shorter side resized, centre crop),
unlike LLaVA's processor, which pads to a square (a small, documented difference).

**Prompts** (llava-1.5 chat format): ``USER: <image>\\n{prompt} ASSISTANT:``. Captioning: "Provide a short
caption for this image."; VQA: the question, then "Answer the question using a single word or phrase."
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.errors import UserError
from simclip_bench.results.schema import vlm_model_id
from simclip_bench.vlm.base import NATIVE_ENCODER, LoadedVLM, VisionLanguageModel

CAPTION_PROMPT = "Provide a short caption for this image."
VQA_SUFFIX = "Answer the question using a single word or phrase."
CHAT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


def _image_token_id(model) -> int:
    cfg = model.config
    token = getattr(cfg, "image_token_id", None)
    return int(token if token is not None else cfg.image_token_index)


def _vision_tower(model) -> nn.Module:
    inner = getattr(model, "model", model)
    return inner.vision_tower


def swap_vision_tower(model, hf_vision: nn.Module) -> None:
    """Replace LLaVA's vision tower by ``hf_vision`` (an HF ``CLIPVisionModel[WithProjection]``), in place."""
    from transformers import CLIPVisionModel

    old = _vision_tower(model)
    new_cfg = hf_vision.config
    if new_cfg.hidden_size != old.config.hidden_size:
        raise UserError(f"this LLaVA reads vision features of width {old.config.hidden_size}, but the encoder has "
                        f"width {new_cfg.hidden_size}; swap in an encoder of the same architecture "
                        "(ViT-L/14 for LLaVA-1.5)")
    tower = CLIPVisionModel(new_cfg)
    source = getattr(hf_vision, "vision_model", hf_vision)
    getattr(tower, "vision_model", tower).load_state_dict(source.state_dict())  # transformers 5 has no .vision_model
    tower.to(device=next(old.parameters()).device, dtype=next(old.parameters()).dtype).eval().requires_grad_(False)
    getattr(model, "model", model).vision_tower = tower
    model.config.vision_config = new_cfg


class LlavaVLM(VisionLanguageModel):
    """A LLaVA model + tokenizer; images (B, 3, S, S) in [0,1] with S the tower's ``image_size``."""

    def __init__(self, model, tokenizer, name: str = "llava", mean: Sequence[float] = open_clip.OPENAI_DATASET_MEAN,
                 std: Sequence[float] = open_clip.OPENAI_DATASET_STD) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        tower_cfg = _vision_tower(model).config
        self.image_size = int(tower_cfg.image_size)
        self.n_image_tokens = (self.image_size // int(tower_cfg.patch_size)) ** 2
        if getattr(model.config, "vision_feature_select_strategy", "default") == "full":
            self.n_image_tokens += 1
        self.image_token_id = _image_token_id(model)
        dev = self.device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def caption_prompt(self) -> str:
        return CAPTION_PROMPT

    def vqa_prompt(self, question: str) -> str:
        return f"{question.strip()}\n{VQA_SUFFIX}"

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got {tuple(images.shape[-2:])}")
        dtype = next(_vision_tower(self.model).parameters()).dtype
        return ((images.float() - self.mean) / self.std).to(dtype)

    def _prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the chat prompt, the one ``<image>`` expanded to one id per image token."""
        ids = self.tokenizer(CHAT_TEMPLATE.format(prompt=prompt)).input_ids
        if ids.count(self.image_token_id) != 1:
            raise ValueError("the tokenizer must map '<image>' to the model's image token id")
        k = ids.index(self.image_token_id)
        return ids[:k] + [self.image_token_id] * self.n_image_tokens + ids[k + 1:]

    def _batch(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and attention mask."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def target_scores(self, images: torch.Tensor, prompts: Sequence[str],
                      targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        target_ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in targets]
        rows = [self._prompt_ids(p) + t for p, t in zip(prompts, target_ids, strict=True)]
        ids, mask = self._batch(rows)
        out = self.model(input_ids=ids, attention_mask=mask, pixel_values=self._pixels(images))
        logits = out.logits[:, :-1].float()
        labels = ids[:, 1:]
        is_target = torch.zeros_like(labels, dtype=torch.bool)
        for i, t in enumerate(target_ids):
            is_target[i, labels.shape[1] - len(t):] = True
        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        loss = (nll * is_target).sum(1) / is_target.sum(1).clamp(min=1)
        match = ((logits.argmax(-1) == labels) | ~is_target).all(1)
        return loss, match

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20) -> list[str]:
        ids, mask = self._batch([self._prompt_ids(p) for p in prompts])
        out = self.model.generate(input_ids=ids, attention_mask=mask, pixel_values=self._pixels(images),
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.pad_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]


def load_llava(model_id: str, encoder_spec: str, device: torch.device, allow_unsafe_pickle: bool = False):
    """``LlavaForConditionalGeneration.from_pretrained(model_id)`` with ``encoder_spec`` swapped in (or
    ``native``: its own tower). Weights come from a local folder or the HF cache/hub, through transformers.
    ``allow_unsafe_pickle`` (default False) applies to the encoder only (see ``load_model``)."""
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from simclip_bench.models.checkpoint import state_dict_sha256
    from simclip_bench.models.hub import in_cache, offline_error, offline_reason, quiet_hub

    reason = None if Path(model_id).expanduser().is_dir() else offline_reason()
    if reason is not None and not in_cache(model_id, ["config.json"]):
        raise offline_error(f"llava:{model_id}", reason, f"download it elsewhere ('hf download {model_id} --local-dir "
                                                         "DIR') and pass --vlm llava:DIR")
    try:
        with quiet_hub(offline=reason is not None):
            model = LlavaForConditionalGeneration.from_pretrained(model_id, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load LLaVA {model_id!r}: {str(e).splitlines()[0][:200]} (a hub id needs network "
                        "access or the model in the HF cache; or pass a local folder)") from None
    name = model_id.rstrip("/").split("/")[-1]
    vlm_hash = _llava_hash(model, tokenizer)  # on the CPU, before the swap: language model, projector, tokenizer
    if encoder_spec == NATIVE_ENCODER:
        model.to(device)
        vlm = LlavaVLM(model, tokenizer, name=name)
        return LoadedVLM(vlm, f"llava:{model_id}", encoder_spec, f"{name}[native]",
                         state_dict_sha256(_vision_tower(model).state_dict()), vlm_hash=vlm_hash)
    from simclip_bench.models.hf_vision import open_clip_to_hf_vision
    from simclip_bench.models.spec import load_model

    loaded = load_model(encoder_spec, "cpu", allow_unsafe_pickle)
    swap_vision_tower(model, open_clip_to_hf_vision(loaded.model.clip.visual))
    model.to(device)
    enc = loaded.model.encoder
    vlm = LlavaVLM(model, tokenizer, name=name, mean=enc.mean.flatten().tolist(), std=enc.std.flatten().tolist())
    return LoadedVLM(vlm, f"llava:{model_id}", encoder_spec, vlm_model_id(name, loaded.model_id),
                     loaded.checkpoint_hash, vlm_hash=vlm_hash)


def _llava_hash(model, tokenizer) -> str:
    """The VLM part of a LLaVA's identity: every weight but its vision tower's (language model, projector), and
    the tokenizer's vocabulary. Two folders with one name, or one folder re-saved after fine-tuning, differ."""
    import hashlib
    import json

    from simclip_bench.models.checkpoint import weights_sha256

    tower = _vision_tower(model)
    prefix = next(name for name, module in model.named_modules() if module is tower)
    vocab = hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
    return f"{weights_sha256(model, exclude=(prefix + '.',))}:{vocab}"
