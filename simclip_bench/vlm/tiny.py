"""The built-in tiny VLM: the tiny CLIP vision tower (frozen, swappable) + a projector + a small decoder.

Architecture (a ClipCap-style prefix VLM; Mokady et al. 2021):

* vision: any simclip-bench encoder of the ``simclip-tiny`` architecture (the built-in ``tiny-clip`` or a
  fine-tuned run), images in [0,1] -> the CLIP image embedding (64-d), L2-normalised;
* projector: MLP 64 -> 128 -> ``n_prefix`` (4) tokens of width 64;
* decoder: a causal transformer (2 layers, width 64, 4 heads, MLP 128, pre-norm) over
  ``[visual prefix] [prompt] <sep> [answer] <eos>``, word-level vocabulary (:mod:`simclip_bench.vlm.words`).

Why the pooled embedding and not patch tokens (which LLaVA reads): the 32-px tower has only 16 patches,
and the pooled embedding is the representation the tiny CLIP learned to align with text, so it carries
shape, colour, size, position and background. Sim-CLIP anchors exactly this output, so a fine-tuned
encoder drops in without retraining the projector or the decoder.

Weights (``weights/tiny-vlm.safetensors``, float16, with the vocabulary and config in the metadata) come
from ``simclip pretrain-vlm``; the vision tower is not part of them.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import load_safetensors, read_safetensors_metadata, save_safetensors_atomic
from simclip_bench.models.pixel_clip import PixelSpaceEncoder
from simclip_bench.multiple_choice import OPTION_LETTERS as MULTIPLE_CHOICE_LETTERS
from simclip_bench.vlm.base import (
    REFERENCE_MAX_NEW_TOKENS,
    Generation,
    VisionLanguageModel,
    reference_max_new_tokens,
)
from simclip_bench.vlm.words import WordVocab, split_words

TINY_VLM_FORMAT = "simclip-bench.tiny-vlm.v1"
TINY_VLM_WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny-vlm.safetensors"
CAPTION_PROMPT = "caption:"
VQA_ATTACK_TARGETS: tuple[str, ...] = ("maybe", "word")
QUESTION_LINE = "Question:"


@dataclass
class TinyVLMConfig:
    """Shapes of the tiny VLM; ``vision_dim`` is the encoder's embedding size (64 for ``tiny-clip``)."""

    vision_dim: int = 64
    n_prefix: int = 4
    width: int = 64
    layers: int = 2
    heads: int = 4
    mlp_width: int = 128
    max_len: int = 40
    vision_arch: str = "simclip-tiny"


class TinyVLMHead(nn.Module):
    """Projector + causal decoder: everything of the tiny VLM except the vision tower."""

    def __init__(self, cfg: TinyVLMConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.projector = nn.Sequential(nn.Linear(cfg.vision_dim, 2 * cfg.width), nn.GELU(),
                                       nn.Linear(2 * cfg.width, cfg.n_prefix * cfg.width))
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.width)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.mlp_width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.lm_head = nn.Linear(cfg.width, vocab_size, bias=False)

    def forward(self, image_features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_prefix + T, V) for L2-normalised features (B, D) and left-padded tokens (B, T), pad = 0."""
        b, t = tokens.shape
        prefix = self.projector(image_features).view(b, self.cfg.n_prefix, self.cfg.width)
        keep = torch.cat([torch.ones(b, self.cfg.n_prefix, dtype=torch.bool, device=tokens.device), tokens != 0], 1)
        positions = (keep.long().cumsum(1) - 1).clamp(min=0)
        if positions.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence of {positions.shape[1]} tokens exceeds max_len {self.cfg.max_len}")
        h = torch.cat([prefix, self.token_embedding(tokens)], 1) + self.position_embedding(positions)
        n = h.shape[1]
        causal = torch.triu(torch.ones((n, n), dtype=torch.bool, device=h.device), diagonal=1)
        h = self.decoder(h, mask=causal, src_key_padding_mask=~keep, is_causal=False)
        return self.lm_head(self.norm(h))


def _left_pad(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


class TinyVLM(VisionLanguageModel):
    """The tiny VLM behind the :class:`VisionLanguageModel` interface; ``encoder`` can be any tiny-CLIP tower."""

    name = "tiny-vlm"

    def __init__(self, encoder: PixelSpaceEncoder, head: TinyVLMHead, vocab: WordVocab, image_size: int = 32) -> None:
        self.encoder = encoder
        self.head = head
        self.vocab = vocab
        self.image_size = image_size

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def caption_prompt(self, dataset: str = "") -> str:
        return CAPTION_PROMPT

    def vqa_prompt(self, question: str, dataset: str = "") -> str:
        return question

    def choice_prompt(self, question: str, choices: Sequence[str], style: str = "") -> str:
        """The question line alone (``Question: ...`` of LLaVA's ScienceQA text, else the first line): the
        tiny VLM was taught short questions, not lettered options."""
        lines = [ln.strip() for ln in question.splitlines() if ln.strip()]
        asked = [ln[len(QUESTION_LINE):].strip() for ln in lines if ln.startswith(QUESTION_LINE)]
        return (asked or lines or [""])[0]

    def choice_target(self, letter: str, choices: Sequence[str]) -> str:
        return choices[MULTIPLE_CHOICE_LETTERS.index(letter)]

    def read_choice(self, text: str, choices: Sequence[str]) -> str:
        """The letter of the option the answer names (the tiny VLM answers with words, never letters)."""
        named = [k for k, c in enumerate(choices) if split_words(c) == split_words(text)]
        return MULTIPLE_CHOICE_LETTERS[named[0]] if len(named) == 1 else text

    def generation(self, task: str, dataset: str = "") -> Generation:
        return Generation(max_new_tokens=reference_max_new_tokens(task, dataset))

    def describe(self) -> dict:
        return {"adapter": "tiny-vlm", "format": TINY_VLM_FORMAT, "caption_prompt": CAPTION_PROMPT,
                "vqa_prompt": "the question", "choice_prompt": "the question line",
                "choice_answers": "option text, read back as its letter", "labels": "answer and <eos>",
                "image_prep": "shorter side resized, centre crop", "image_size": self.image_size,
                "generation": {t: self.generation(t).describe() for t in REFERENCE_MAX_NEW_TOKENS}
                | {"vqa/textvqa": self.generation("vqa", "textvqa").describe()},
                "context_tokens": self.head.cfg.max_len,
                "vocabulary_sha256": hashlib.sha256(json.dumps(self.vocab.words).encode()).hexdigest()}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(images).float(), dim=-1)

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.vocab.encode(prompt) + [self.vocab.sep]

    def target_scores(self, images: torch.Tensor, prompts: Sequence[str],
                      targets: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_ids = [self._prompt_ids(p) for p in prompts]
        target_ids = [self.vocab.encode(t) + [self.vocab.eos] for t in targets]
        return sequence_scores(self.head, self.features(images), prompt_ids, target_ids)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 20,
                 min_new_tokens: int = 0, num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
        """Greedy decoding up to ``max_new_tokens`` (and the context length); beam search is not implemented."""
        if num_beams != 1 or min_new_tokens:
            raise ValueError("the tiny VLM decodes greedily: num_beams 1, min_new_tokens 0")
        feats = self.features(images)
        rows = [self._prompt_ids(p) for p in prompts]
        budget = self.head.cfg.max_len - self.head.cfg.n_prefix - max(len(r) for r in rows)
        out: list[list[int]] = [[] for _ in rows]
        done = torch.zeros(len(rows), dtype=torch.bool, device=feats.device)
        for _ in range(min(max_new_tokens, budget)):
            tokens = _left_pad([r + o for r, o in zip(rows, out, strict=True)], feats.device)
            nxt = self.head(feats, tokens)[:, -1].argmax(-1)
            nxt = torch.where(done, self.vocab.eos, nxt)
            for i, t in enumerate(nxt.tolist()):
                out[i].append(t)
            done |= nxt == self.vocab.eos
            if bool(done.all()):
                break
        return [self.vocab.decode(o) for o in out]


def sequence_scores(head: TinyVLMHead, feats: torch.Tensor, prompt_ids: Sequence[list[int]],
                    target_ids: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: mean cross-entropy of ``target_ids`` after ``prompt_ids`` (teacher forcing, nats), and
    whether every target token but the last (``<eos>``) is the arg-max, i.e. greedy decoding starts with it."""
    rows = [p + t for p, t in zip(prompt_ids, target_ids, strict=True)]
    tokens = _left_pad(rows, feats.device)
    logits = head(feats, tokens)[:, head.cfg.n_prefix - 1:-1].float()  # position i predicts token i
    width = tokens.shape[1]
    is_target = torch.zeros_like(tokens, dtype=torch.bool)
    for i, t in enumerate(target_ids):
        is_target[i, width - len(t):] = True
    nll = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
    loss = (nll * is_target).sum(1) / is_target.sum(1)
    words = is_target.clone()
    words[:, -1] = False  # the final <eos>
    match = ((logits.argmax(-1) == tokens) | ~words).all(1)
    return loss, match


def save_tiny_vlm(head: TinyVLMHead, vocab: WordVocab, path: Path, extra: dict | None = None) -> None:
    """Write the head as float16 safetensors with config, vocabulary and ``extra`` provenance in the metadata."""
    tensors = {k: v.half() for k, v in head.state_dict().items()}
    meta = {"format": TINY_VLM_FORMAT, "config": json.dumps(asdict(head.cfg)), "vocab": json.dumps(vocab.words),
            "provenance": json.dumps(extra or {}, sort_keys=True)}
    save_safetensors_atomic(tensors, path, meta)


def load_tiny_vlm_head(path: Path = TINY_VLM_WEIGHTS) -> tuple[TinyVLMHead, WordVocab, dict]:
    """The projector + decoder and vocabulary from a tiny-VLM weights file (float32, eval mode, frozen)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tiny VLM weights missing at {path}; rebuild them with 'simclip pretrain-vlm'")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != TINY_VLM_FORMAT:
        raise UserError(f"{path} is not a tiny-VLM weights file (format {meta.get('format')!r})")
    vocab = WordVocab(json.loads(meta["vocab"]))
    head = TinyVLMHead(TinyVLMConfig(**json.loads(meta["config"])), len(vocab))
    head.load_state_dict({k: v.float() for k, v in load_safetensors(path).items()})
    head.eval().requires_grad_(False)
    return head, vocab, json.loads(meta.get("provenance", "{}"))
