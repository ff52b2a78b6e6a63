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

**Resolution (224 vs 336): as RobustVLM.** LLaVA-1.5's own tower is CLIP ViT-L/14 at 336 px (576 patch
tokens); the robust encoders of RobustVLM, FARE and Sim-CLIP are ViT-L/14 at 224 px. RobustVLM's
``llava/model/builder.py`` (``load_pretrained_model(..., pretrained_rob_path=...)``) puts any non-``None``
``pretrained_rob_path`` -- ``openai`` included -- in through ``clip_encoder.py``'s ``non_llava`` path: the
open_clip ``ViT-L-14`` (openai weights, then the robust state dict), its last block removed (LLaVA reads the
penultimate one), at **224 px** with ``openai/clip-vit-large-patch14``'s processor, so LLaVA sees 256 image
tokens (its projector works per token). Its LLaVA tables' clean baseline is therefore the 224-px OpenAI
tower, not LLaVA's 336-px one. Here the same: a swapped tower runs at its own resolution, the default
encoder of ``--vlm llava:...`` is ``ViT-L-14:openai`` (224 px), and ``--model native`` keeps LLaVA's own
336-px tower.

**Pixels.** Images come in [0,1]; the wrapper normalises with the tower's mean/std (OpenAI CLIP's for
LLaVA-1.5) inside the forward pass, so the eps-ball is in pixel space (RobustVLM sets the processor's
``do_normalize = False`` and normalises in ``__call__``). Files become the input square as LLaVA's
``process_images`` makes them (``image_aspect_ratio = "pad"``): padded to a square with the processor's
mean colour ``int(255 * mean)`` = (122, 116, 104), then resized to ``image_size``
(:meth:`LlavaVLM.image_prep`); ScienceQA goes through ``image_processor.preprocess`` alone
(``model_vqa_science.py``): shorter side resized, centre crop.

**Prompts, labels, decoding**: :mod:`simclip_bench.vlm.llava_prompt` (vicuna_v1 with its system sentence,
per-dataset suffixes, the answer and "</s>" scored, the stop string stripped); greedy, one beam, the
references' lengths per task (:data:`~simclip_bench.vlm.base.REFERENCE_MAX_NEW_TOKENS`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from torch import nn

from simclip_bench.errors import UserError
from simclip_bench.results.schema import vlm_model_id
from simclip_bench.vlm import llava_prompt as lp
from simclip_bench.vlm.base import (
    CROP,
    NATIVE_ENCODER,
    REFERENCE_MAX_NEW_TOKENS,
    Generation,
    ImagePrep,
    LoadedVLM,
    VisionLanguageModel,
    reference_max_new_tokens,
    teacher_forced_scores,
    vlm_identity,
)

# RobustVLM's LLaVA encoder when none is named (pretrained_rob_path=openai: the 224-px open_clip tower).
DEFAULT_LLAVA_ENCODER = "ViT-L-14:openai"
PADDED_TASKS = ("captioning", "vqa", "pope")  # process_images (pad); ScienceQA: image_processor.preprocess


def _image_token_id(model) -> int:
    cfg = model.config
    token = getattr(cfg, "image_token_id", None)
    return int(token if token is not None else cfg.image_token_index)


def _vision_tower(model) -> nn.Module:
    inner = getattr(model, "model", model)
    return inner.vision_tower


def _tower_prefix(model) -> str:
    """The state-dict prefix of the vision tower (``model.vision_tower.`` in transformers 5)."""
    tower = _vision_tower(model)
    return next(name for name, module in model.named_modules() if module is tower) + "."


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
        # mm_utils.process_images: expand2square(image, tuple(int(x * 255) for x in image_processor.image_mean))
        self.pad_fill = tuple(int(m * 255) for m in mean)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def caption_prompt(self, dataset: str = "") -> str:
        return lp.CAPTION_MESSAGE

    def vqa_prompt(self, question: str, dataset: str = "") -> str:
        return lp.vqa_message(question, dataset)

    def choice_prompt(self, question: str, choices: Sequence[str], style: str = "robustvlm") -> str:
        return lp.choice_message(question, style or "robustvlm")

    def generation(self, task: str, dataset: str = "") -> Generation:
        return Generation(max_new_tokens=reference_max_new_tokens(task, dataset))

    def image_prep(self, task: str) -> ImagePrep:
        return ImagePrep(self.pad_fill) if task in PADDED_TASKS else CROP

    def describe(self) -> dict:
        return {"adapter": "llava", "conversation": "vicuna_v1", "system": lp.SYSTEM, "roles": list(lp.ROLES),
                "separators": [lp.SEP, lp.SEP2], "caption_message": lp.CAPTION_MESSAGE,
                "vqa_suffix": lp.SHORT_ANSWER, "vizwiz_suffix": lp.VIZWIZ_UNANSWERABLE + lp.SHORT_ANSWER,
                "scienceqa_letter_suffix": lp.LETTER_ANSWER, "labels": "answer and </s>",
                "stop_string": lp.STOP_STRING, "image_size": self.image_size, "n_image_tokens": self.n_image_tokens,
                "image_prep": {t: self.image_prep(t).describe() for t in REFERENCE_MAX_NEW_TOKENS},
                "generation": {t: self.generation(t).describe() for t in REFERENCE_MAX_NEW_TOKENS}
                | {"vqa/textvqa": self.generation("vqa", "textvqa").describe()},
                "normalize": {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}}

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got {tuple(images.shape[-2:])}")
        dtype = next(_vision_tower(self.model).parameters()).dtype
        return ((images.float() - self.mean) / self.std).to(dtype)

    def _ids(self, text: str) -> list[int]:
        return lp.image_token_ids(self.tokenizer, text, self.image_token_id, self.n_image_tokens)

    def scored_tokens(self, prompt: str, target: str) -> tuple[list[int], int]:
        """Token ids of the answered conversation and how many of them the labels mask (the context up to
        and including "ASSISTANT:"): the rest, the answer and "</s>", is scored."""
        text = lp.conversation(prompt, target)
        return self._ids(text), len(self._ids(lp.context_of(text)))

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
        scored = [self.scored_tokens(p, t) for p, t in zip(prompts, targets, strict=True)]
        ids, mask = self._batch([r for r, _ in scored])
        out = self.model(input_ids=ids, attention_mask=mask, pixel_values=self._pixels(images))
        logits = out.logits[:, :-1].float()
        labels = ids[:, 1:]
        width = ids.shape[1]
        is_target = torch.zeros_like(labels, dtype=torch.bool)
        answer = torch.zeros_like(labels, dtype=torch.bool)  # the answer's tokens without the final "</s>"
        for i, (row, masked) in enumerate(scored):
            first = width - len(row) + masked - 1  # label position of the first scored token
            is_target[i, first:] = True
            answer[i, first:-1] = True
        return teacher_forced_scores(logits, labels, is_target, decides=answer)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20,
                 min_new_tokens: int = 0, num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
        ids, mask = self._batch([self._ids(lp.conversation(p)) for p in prompts])
        beams = {"num_beams": num_beams} | ({"length_penalty": length_penalty} if num_beams > 1 else {})
        out = self.model.generate(input_ids=ids, attention_mask=mask, pixel_values=self._pixels(images),
                                  max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                                  pad_token_id=self.pad_id, **beams)
        return [lp.strip_stop(t) for t in self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]


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
                         state_dict_sha256(_vision_tower(model).state_dict()), vlm_identity(vlm_hash, vlm))
    from simclip_bench.models.hf_vision import open_clip_to_hf_vision
    from simclip_bench.models.spec import load_model

    loaded = load_model(encoder_spec, "cpu", allow_unsafe_pickle)
    swap_vision_tower(model, open_clip_to_hf_vision(loaded.model.clip.visual))
    model.to(device)
    enc = loaded.model.encoder
    vlm = LlavaVLM(model, tokenizer, name=name, mean=enc.mean.flatten().tolist(), std=enc.std.flatten().tolist())
    return LoadedVLM(vlm, f"llava:{model_id}", encoder_spec, vlm_model_id(name, loaded.model_id),
                     loaded.checkpoint_hash, vlm_identity(vlm_hash, vlm))


def _llava_hash(model, tokenizer) -> str:
    """The weights part of a LLaVA's identity: every weight but its vision tower's (language model, projector), and
    the tokenizer's vocabulary. Two folders with one name, or one folder re-saved after fine-tuning, differ."""
    import hashlib
    import json

    from simclip_bench.models.checkpoint import weights_sha256

    vocab = hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()
    return f"{weights_sha256(model, exclude=(_tower_prefix(model),))}:{vocab}"
