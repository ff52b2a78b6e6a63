"""OpenFlamingo (``--vlm openflamingo:DIR``) behind the :class:`~simclip_bench.vlm.base.VisionLanguageModel`
interface, as RobustVLM evaluates it (``open_flamingo/eval/models/of_eval_model_adv.py``,
``vlm_eval/run_evaluation.py``, ``bash/of_eval_9B.sh``), with a swappable vision encoder.

**Why not the ``open-flamingo`` package.** Its 2.0.1 wheel (``pip install --no-deps open-flamingo
einops-exts``) imports on torch 2.14 / transformers 5 / open_clip 3.3 and its forward pass runs, but (1)
``generate`` fails on transformers 5 (``FlamingoLMMixin.forward`` requires an ``attention_mask`` argument
that generation's prefill no longer passes), (2) its ``_encode_vision_x`` runs the vision encoder under
``torch.no_grad()`` (RobustVLM patches a ``compute_all_grads`` switch in, to attack the image), and (3) it
reads the image tokens from open_clip's ``output_tokens``, which open_clip ≥ 2.23 layer-normalises
(``ln_post``) while OpenFlamingo-9B was trained on the raw ones (RobustVLM pins open_clip 2.19). So the
architecture is written here (:mod:`simclip_bench.vlm.flamingo_layers`), with OpenFlamingo's parameter
names, and nothing extra is installed.

**The model.** Vision: the swapped open_clip ViT's patch tokens after the last block, class token
dropped, no final layer norm (open_clip 2.19's ``output_tokens``); a :class:`PerceiverResampler`; the
language model (an HF causal LM, MPT-7B for OpenFlamingo-9B) with a gated cross-attention block in front of
every ``cross_attn_every_n_layers``-th decoder layer (4 for the 9B model). The tokenizer gets
``<|endofchunk|>`` and ``<image>`` (and ``<PAD>`` when it has no pad token) and the embeddings are resized
to it, as ``create_model_and_transforms`` does.

**Prompts** (``get_caption_prompt``, ``get_vqa_prompt``): ``<image>Output:{caption}<|endofchunk|>`` and
``<image>Question:{question} Short answer:{answer}<|endofchunk|>``, colons removed from the answer. Zero-shot
(``--shots 0``) prepends two demonstrations from the training split with their ``<image>`` removed (text
only: ``compute_effective_num_shots``); ``--shots k`` prepends k demonstrations with their images, and only
the query image is attacked (``--mask_out context``). Labels (``get_label(mode="colon")``): everything up
to and including the last ":" token is masked, and so are padding, the first token, ``<image>`` and
``<|endofchunk|>``: the answer alone is scored. Decoding (``evaluate_captioning``, ``evaluate_vqa``): beam
search with 3 beams, length penalty -2 for captions and 0 for answers, 20 new tokens (VQA 5, TextVQA 10),
ending at ``<|endofchunk|>``. Images: shorter side resized to 224, centre crop, normalised inside (the
open_clip transform without its ``Normalize``).

**The folder** ``DIR``: ``checkpoint.pt`` (OpenFlamingo's released file, read with ``weights_only``) or
``checkpoint.safetensors``; ``lm/``, the language model and its tokenizer as an HF folder (for
OpenFlamingo-9B: ``hf download anas-awadalla/mpt-7b --local-dir DIR/lm``, read with transformers' own MPT,
no remote code); and optionally ``openflamingo.json`` with ``cross_attn_every_n_layers`` (default 4) and
``perceiver`` / ``cross_attention`` sizes (defaults: OpenFlamingo's).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from simclip_bench.vlm.base import Generation, VisionLanguageModel, reference_max_new_tokens, teacher_forced_scores
from simclip_bench.vlm.flamingo_layers import FlamingoLayer, GatedCrossAttentionBlock, MediaState, PerceiverResampler

MEDIA, END_OF_CHUNK, PAD = "<image>", "<|endofchunk|>", "<PAD>"
ZERO_SHOT_TEXT_DEMOS = 2  # run_evaluation.py compute_effective_num_shots: 0 shots -> 2 text-only demonstrations
BEAMS = 3
LENGTH_PENALTY = {"captioning": -2.0, "vqa": 0.0}  # evaluate_captioning / evaluate_vqa defaults
# create_model_and_transforms' decoder_layers_attr_name, by the language model's config.model_type
DECODER_LAYERS = {"mpt": "transformer.blocks", "llama": "model.layers", "gpt_neox": "gpt_neox.layers",
                  "opt": "model.decoder.layers", "gptj": "transformer.h"}


class FewShotPrompt(str):
    """A prompt whose demonstrations bring their own images (``--shots k``, k > 0), in prompt order."""

    context_images: tuple[torch.Tensor, ...]

    def __new__(cls, text: str, context_images: Sequence[torch.Tensor]) -> FewShotPrompt:
        prompt = super().__new__(cls, text)
        prompt.context_images = tuple(context_images)
        return prompt


def _answer(text: str) -> str:
    return text.replace(":", "") if ":" in text else text


def caption_text(caption: str | None = None) -> str:
    """``get_caption_prompt``: open (no caption) or answered, ending ``<|endofchunk|>``."""
    return f"{MEDIA}Output:" + ("" if caption is None else _answer(caption) + END_OF_CHUNK)


def vqa_text(question: str, answer: str | None = None) -> str:
    """``get_vqa_prompt``: open (no answer) or answered, ending ``<|endofchunk|>``."""
    return f"{MEDIA}Question:{question} Short answer:" + ("" if answer is None else _answer(answer) + END_OF_CHUNK)


def patch_tokens(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip 2.19's ``output_tokens`` of a ViT: the last block's tokens, class token dropped, no ``ln_post``."""
    return visual.transformer(visual._embeds(pixels))[:, 1:]


class Flamingo(nn.Module):
    """Vision tower + perceiver + language model with gated cross-attention (OpenFlamingo's parameter names)."""

    def __init__(self, visual: nn.Module, lang_encoder: nn.Module, media_token_id: int, vis_dim: int,
                 cross_attn_every_n_layers: int = 4, perceiver: dict | None = None,
                 cross_attention: dict | None = None) -> None:
        super().__init__()
        self.vision_encoder = visual
        self.perceiver = PerceiverResampler(vis_dim, **(perceiver or {}))
        self.lang_encoder = lang_encoder
        self.state = MediaState(media_token_id)
        path = DECODER_LAYERS.get(lang_encoder.config.model_type)
        if path is None:
            raise ValueError(f"no known decoder-layer list for a {lang_encoder.config.model_type!r} language model; "
                             f"known: {', '.join(DECODER_LAYERS)}")
        parent_path, _, attr = path.rpartition(".")
        parent = lang_encoder.get_submodule(parent_path)
        dim = getattr(lang_encoder.config, "d_model", None) or lang_encoder.config.hidden_size
        parent.register_module(attr, nn.ModuleList([
            FlamingoLayer(GatedCrossAttentionBlock(dim, vis_dim, **(cross_attention or {}))
                          if (i + 1) % cross_attn_every_n_layers == 0 else None, layer, self.state)
            for i, layer in enumerate(getattr(parent, attr))]))
        lang_encoder.register_forward_pre_hook(self._see_input_ids, with_kwargs=True)

    def _see_input_ids(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.state.observe(ids)

    def condition(self, vision_x: torch.Tensor) -> None:
        """Encode images (B, T_img, 3, H, W), normalised, into the latents every cross-attention reads."""
        b, t = vision_x.shape[:2]
        tokens = patch_tokens(self.vision_encoder, vision_x.flatten(0, 1))
        self.state.latents = self.perceiver(tokens.unflatten(0, (b, t)).unsqueeze(2))
        self.state.text_time = self.state.images_in_prompt = None


class OpenFlamingoVLM(VisionLanguageModel):
    """An OpenFlamingo model and tokenizer; images (B, 3, S, S) in [0,1], the query image of each prompt."""

    def __init__(self, model: Flamingo, tokenizer, image_size: int, mean: Sequence[float], std: Sequence[float],
                 shots: int = 0, name: str = "openflamingo", every: int = 4) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_size, self.shots, self.name, self.every = image_size, shots, name, every
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.eoc_id = tokenizer.encode(END_OF_CHUNK)[-1]
        self.media_id = tokenizer.encode(MEDIA)[-1]
        self.colon_id = tokenizer.encode(":")[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def demonstrations_per_prompt(self) -> int:
        """Demonstrations a prompt is built with: ``shots``, or two text-only ones zero-shot."""
        return self.shots or ZERO_SHOT_TEXT_DEMOS

    def _prompt(self, demos: Sequence[str], query: str, images: Sequence[torch.Tensor]) -> str:
        context = "".join(demos)
        if not self.shots:
            return context.replace(MEDIA, "") + query
        return FewShotPrompt(context + query, images)

    def caption_prompt(self, dataset: str = "", demos: Sequence[tuple] = ()) -> str:
        """``demos``: (caption, image) pairs from the training split."""
        return self._prompt([caption_text(c.strip()) for c, _ in demos], caption_text(), [im for _, im in demos])

    def vqa_prompt(self, question: str, dataset: str = "", demos: Sequence[tuple] = ()) -> str:
        """``demos``: (question, answer, image) triples from the training split."""
        return self._prompt([vqa_text(q, a) for q, a, _ in demos], vqa_text(question), [im for _, _, im in demos])

    def generation(self, task: str, dataset: str = "") -> Generation:
        return Generation(max_new_tokens=reference_max_new_tokens(task, dataset), num_beams=BEAMS,
                          length_penalty=LENGTH_PENALTY.get(task, 0.0))

    def describe(self) -> dict:
        return {"adapter": "openflamingo", "caption_prompt": caption_text("{caption}"),
                "vqa_prompt": vqa_text("{question}", "{answer}"), "shots": self.shots,
                "zero_shot_text_demos": ZERO_SHOT_TEXT_DEMOS, "labels": "after the last ':' token, answer only",
                "cross_attn_every_n_layers": self.every, "vision_tokens": "last block, no ln_post",
                "image_prep": "shorter side resized, centre crop", "image_size": self.image_size,
                "generation": {t: self.generation(t).describe() for t in ("captioning", "vqa")}
                | {"vqa/textvqa": self.generation("vqa", "textvqa").describe()},
                "normalize": {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}}

    def _vision_x(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images must be {self.image_size}x{self.image_size}, got {tuple(images.shape[-2:])}")
        rows = []
        for x, p in zip(images, prompts, strict=True):
            context = [c.to(x.device, x.dtype) for c in getattr(p, "context_images", ())]
            rows.append(torch.stack([*context, x]))
        vision_x = torch.stack(rows)  # prompts of one batch carry the same number of images
        mean, std = self.mean.to(vision_x.device), self.std.to(vision_x.device)
        return (vision_x.float() - mean) / std

    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="longest", return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def labels(self, ids: torch.Tensor) -> torch.Tensor:
        """``get_label(mode="colon")``: which tokens are scored (the answer after the last ":")."""
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for i, row in enumerate(ids):
            colons = (row == self.colon_id).nonzero().flatten()
            keep[i, int(colons[-1]) + 1:] = True
        keep &= ids != self.tokenizer.pad_token_id
        keep[:, 0] = False
        return keep & (ids != self.media_id) & (ids != self.eoc_id)

    def target_scores(self, images: torch.Tensor, prompts: Sequence[str],
                      targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [str(p) + _answer(t) + END_OF_CHUNK for p, t in zip(prompts, targets, strict=True)]
        ids, mask = self._encode(texts)
        try:
            self.model.condition(self._vision_x(images, prompts))
            logits = self.model.lang_encoder(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        finally:
            self.model.state.clear()
        labels, scored = ids[:, 1:], self.labels(ids)[:, 1:]
        return teacher_forced_scores(logits, labels, scored)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20,
                 min_new_tokens: int = 0, num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
        ids, mask = self._encode(prompts)
        try:
            self.model.condition(self._vision_x(images, prompts))
            self.model.state.latents = self.model.state.latents.repeat_interleave(num_beams, dim=0)
            beams = {"num_beams": num_beams} | ({"length_penalty": length_penalty} if num_beams > 1 else {})
            out = self.model.lang_encoder.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                                   min_new_tokens=min_new_tokens, do_sample=False,
                                                   eos_token_id=self.eoc_id, pad_token_id=self.tokenizer.pad_token_id,
                                                   **beams)
        finally:
            self.model.state.clear()
        return self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
