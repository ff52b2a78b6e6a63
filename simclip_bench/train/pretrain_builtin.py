"""Contrastive (CLIP / InfoNCE) pretraining of the built-in tiny CLIP on the generated shapes.

This is how the shipped weights ``models/weights/simclip-tiny.safetensors`` are made:
``simclip pretrain-builtin`` reproduces them (same seed, same data, same steps). The weights are
stored in float16 to keep the package small; they are loaded as float32.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.lr_schedule import warmup_cosine
from simclip_bench.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from simclip_bench.models.checkpoint import save_safetensors_atomic
from simclip_bench.models.open_clip_build import create_untrained
from simclip_bench.tasks.zeroshot_head import zero_shot_accuracy


@dataclass
class PretrainConfig:
    """Settings of the built-in model's pretraining (defaults reproduce the shipped weights)."""

    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 200
    train_size: int = 50000
    seed: int = 0
    eval_every: int = 500
    out: str = str(BUILTIN_MODELS[DEFAULT_MODEL].weights)


def pretrain_builtin(cfg: PretrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train the tiny CLIP from scratch; write fp16 safetensors to ``cfg.out``; return a summary."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    arch = BUILTIN_MODELS[DEFAULT_MODEL].arch
    model = create_untrained(arch)
    model.train()
    train = ShapesDataset("train", seed=cfg.seed, size=cfg.train_size)
    val = ShapesDataset("val", seed=cfg.seed)
    log(f"rendering {cfg.train_size} training images ...")
    samples = [train.sample(i) for i in range(len(train))]
    images = np.stack([s.image for s in samples])
    captions = [s.captions for s in samples]
    del samples
    params = [p for p in model.clip.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    start = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        idx = rng.choice(len(train), size=cfg.batch_size, replace=False)
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in idx]
        img = F.normalize(model.encoder(x), dim=-1)
        txt = model.clip.encode_text(model.tokenizer(texts), normalize=True)
        scale = model.clip.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T
        # Identical captions in one batch are true positives, not negatives: use soft targets.
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        targets = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-targets * F.log_softmax(logits.T, 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            acc = zero_shot_accuracy(model, val)
            model.train()
            log(f"step {step + 1}/{cfg.steps} loss {loss.item():.3f} val zero-shot {acc:.1%} "
                f"({time.time() - start:.0f}s)")
    val_acc = zero_shot_accuracy(model, val)
    summary = {"arch": arch, "val_zero_shot_accuracy": round(val_acc, 4), "seconds": round(time.time() - start, 1),
               "config": asdict(cfg)}
    state = {k: v.detach().half() for k, v in model.clip.state_dict().items()}
    save_safetensors_atomic(state, Path(cfg.out), {"format": "open_clip", "arch": arch,
                                                   "summary": json.dumps(summary)})
    return summary
