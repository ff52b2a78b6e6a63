"""``simclip pretrain-vlm``: train the built-in tiny VLM's projector and decoder on the generated shapes.

Recipe (defaults): the frozen built-in ``tiny-clip`` vision tower embeds 20 000 training images once;
the projector and decoder learn, by teacher-forced cross-entropy, to produce the five captions (prompt
:data:`~simclip_bench.vlm.tiny.CAPTION_PROMPT`) and the six answers (prompt: the question) of each image.
Each example is a caption with probability 1/2, else one of the questions, uniformly. 4 000 steps ×
batch 64, AdamW (lr 1e-3, weight decay 0.01, 200 warm-up steps, cosine), seed 0.

``feature_noise`` (default 0.04) adds Gaussian noise of that standard deviation to every coordinate of
the unit-norm image embedding before the projector (noise injection, as in CapDec, Nukrai et al. 2022):
the decoder learns to read a neighbourhood of each embedding rather than the exact point, so that a
fine-tuned encoder, whose embeddings sit close to but not exactly on the original ones, can drop in
without retraining.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.lr_schedule import warmup_cosine
from simclip_bench.metrics.cider import cider_d
from simclip_bench.metrics.vqa_accuracy import mean_vqa_accuracy
from simclip_bench.models.builtin import DEFAULT_MODEL
from simclip_bench.models.spec import load_model
from simclip_bench.provenance import git_sha, package_version
from simclip_bench.vlm.tiny import (
    CAPTION_PROMPT,
    TINY_VLM_WEIGHTS,
    VQA_ATTACK_TARGETS,
    TinyVLM,
    TinyVLMConfig,
    TinyVLMHead,
    save_tiny_vlm,
    sequence_scores,
)
from simclip_bench.vlm.words import shapes_vocabulary


@dataclass
class TinyVLMTrainConfig:
    """Recipe of the tiny VLM (module docstring); ``out`` defaults to the package's shipped weights."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    train_size: int = 20000
    val_size: int = 200
    feature_noise: float = 0.04
    seed: int = 0
    out: str = str(TINY_VLM_WEIGHTS)


@torch.no_grad()
def _embed(encoder, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([torch.nn.functional.normalize(encoder(images[i:i + batch]).float(), dim=-1)
                      for i in range(0, len(images), batch)])


def _render(dataset: ShapesDataset, vocab) -> tuple[torch.Tensor, list[list[tuple[list[int], list[int]]]]]:
    """Images (N, 3, H, W) in [0,1] and, per image, 5 caption examples then 6 QA examples as
    (prompt ids + <sep>, target ids + <eos>); every sample is rendered once."""
    cap_prompt = vocab.encode(CAPTION_PROMPT) + [vocab.sep]
    out, images = [], []
    for i in range(len(dataset)):
        s = dataset.sample(i)
        images.append(s.image)
        ex = [(cap_prompt, vocab.encode(c) + [vocab.eos]) for c in s.captions]
        ex += [(vocab.encode(q) + [vocab.sep], vocab.encode(a) + [vocab.eos]) for q, a in s.qa]
        out.append(ex)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return x, out


def evaluate_tiny_vlm(vlm: TinyVLM, dataset: ShapesDataset) -> dict[str, float]:
    """Clean CIDEr-D and VQA accuracy; image i is asked its question i mod 6, so all six kinds are covered."""
    samples = [dataset.sample(i) for i in range(len(dataset))]
    x, _ = dataset.tensors()
    captions = vlm.generate(x, [vlm.caption_prompt()] * len(x))
    questions = [s.qa[i % len(s.qa)] for i, s in enumerate(samples)]
    answers = vlm.generate(x, [vlm.vqa_prompt(q) for q, _ in questions])
    return {"cider": cider_d(captions, [s.captions for s in samples]),
            "vqa_accuracy": mean_vqa_accuracy(answers, [[a] * 10 for _, a in questions])}


def train_tiny_vlm(cfg: TinyVLMTrainConfig, log: Callable[[str], None] = print,
                   progress: Callable[[int, float], None] | None = None) -> dict:
    """Train and save the tiny VLM head; returns a summary (validation scores, seconds)."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder = load_model(DEFAULT_MODEL, "cpu").model.encoder
    vocab = shapes_vocabulary([CAPTION_PROMPT, *VQA_ATTACK_TARGETS])
    train_set = ShapesDataset("train", size=cfg.train_size)
    log(f"rendering {cfg.train_size} training images and embedding them with the frozen {DEFAULT_MODEL} tower")
    images, examples = _render(train_set, vocab)
    feats = _embed(encoder, images)
    del images
    head = TinyVLMHead(TinyVLMConfig(vision_dim=feats.shape[1]), len(vocab))
    head.train()
    decay = [p for n, p in head.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in head.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n_caps = 5
    loss_ema = math.nan
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        idx = rng.integers(0, cfg.train_size, cfg.batch_size)
        caption = rng.random(cfg.batch_size) < 0.5
        which = np.where(caption, rng.integers(0, n_caps, cfg.batch_size),
                         n_caps + rng.integers(0, 6, cfg.batch_size))
        batch = [examples[i][w] for i, w in zip(idx.tolist(), which.tolist(), strict=True)]
        f = feats[torch.from_numpy(idx)]
        if cfg.feature_noise > 0:
            f = f + cfg.feature_noise * torch.randn_like(f)
        loss = sequence_scores(head, f, [p for p, _ in batch], [t for _, t in batch])[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        loss_ema = value if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * value
        if progress:
            progress(step + 1, loss_ema)
    head.eval().requires_grad_(False)
    val = evaluate_tiny_vlm(TinyVLM(encoder, head, vocab), ShapesDataset("val", size=cfg.val_size))
    seconds = time.time() - t0
    summary = {"config": asdict(cfg), "val_cider": val["cider"], "val_vqa_accuracy": val["vqa_accuracy"],
               "final_loss": loss_ema, "seconds": round(seconds, 1), "git_sha": git_sha(),
               "package_version": package_version(), "vision_tower": DEFAULT_MODEL}
    save_tiny_vlm(head, vocab, Path(cfg.out), extra=summary)
    return summary
