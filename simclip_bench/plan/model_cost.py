"""FLOPs and memory of one image through a real architecture, counted without weights and cached per architecture.

The architecture is built from its open_clip config on PyTorch's ``meta`` device (shapes only: no weights, no
memory, no download, seconds even for ViT-H) at its real resolution, and one image goes through it. FLOPs are
counted with the formulas of ``torch.utils.flop_counter`` (matmuls, convolutions, attention) in a dispatch mode,
as ``benchmarks/gpu_parts/`` counts them; ``FlopCounterMode`` itself cannot be used, its backward hooks
break ``torch.autograd.grad``. Memory is the bytes of the tensors autograd saves for the backward pass, per image
(four images minus two, halved, so the weights it saves too cancel out), in float32.

Per image:

* ``grad``: an attack's gradient evaluation: forward and input-gradient backward through the zero-shot head
  (the frozen encoder, then the logits against ``n_classes`` text embeddings);
* ``forward``: one forward pass (a verdict, a Square query, a clean prediction);
* ``train``: a training forward and backward with weight gradients (the inner PGD's steps are ``grad`` passes);
* ``text``: one prompt through the text tower (the zero-shot classifier encodes classes x templates once).

Results are cached as JSON under ``$SIMCLIP_CACHE`` (default ``~/.cache/simclip-bench``) in ``model-cost/``,
keyed by the architecture, its resolution and the torch and open_clip versions.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import open_clip
import torch

from simclip_bench.models.builtin import register_model_configs

CACHE_ENV = "SIMCLIP_CACHE"
COST_VERSION = 1  # bump when what is counted changes


@dataclass(frozen=True)
class ModelCost:
    """Counted per image (FLOPs) or per model (parameters, weight bytes); memory in bytes at float32."""

    arch: str
    image_size: int
    grad_flops: float
    forward_flops: float
    train_flops: float
    text_flops: float
    grad_bytes: float  # saved for backward by one image's gradient evaluation (frozen weights)
    train_bytes: float  # saved for backward by one image's training forward (trainable weights)
    vision_params: int
    total_params: int

    @property
    def weight_bytes(self) -> float:
        return 4.0 * self.total_params


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "simclip-bench") / "model-cost"


def _count(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **(kwargs or {}), out_val=out)
            return out

    with Counter():
        fn()
    return Counter.total


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def _meta_model(arch: str):
    register_model_configs()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # no pretrained weights: intended
    try:
        return open_clip.create_model(arch, pretrained=None, device="meta")
    finally:
        root.setLevel(level)


def count_model_cost(arch: str, n_classes: int = 1000) -> ModelCost:
    """Count :class:`ModelCost` of the open_clip architecture ``arch`` (a config name) at its own resolution."""
    clip = _meta_model(arch).eval()
    visual = clip.visual
    size = visual.image_size
    px = int(size[0] if isinstance(size, (tuple, list)) else size)
    clip.requires_grad_(False)
    with torch.no_grad():
        embed = int(visual(torch.zeros(1, 3, px, px, device="meta")).shape[-1])
    classes = torch.zeros(n_classes, embed, device="meta")

    def grad(n: int):
        x = torch.zeros(n, 3, px, px, device="meta", requires_grad=True)
        logits = 100.0 * visual(x) @ classes.T
        torch.autograd.grad(logits.float().sum(), [x])

    def forward():
        with torch.no_grad():
            visual(torch.zeros(1, 3, px, px, device="meta"))

    def train(n: int):
        visual.requires_grad_(True)
        try:
            visual(torch.zeros(n, 3, px, px, device="meta")).float().sum().backward()
        finally:
            visual.requires_grad_(False)

    def text():
        with torch.no_grad():
            ctx = int(getattr(clip, "context_length", 77) or 77)
            clip.encode_text(torch.zeros(1, ctx, dtype=torch.long, device="meta"))

    # batches of 4 and 2: a batched matmul on the meta device saves its weight expanded over the batch from 2 on
    grad_bytes = (_saved_bytes(lambda: grad(4)) - _saved_bytes(lambda: grad(2))) / 2
    train_bytes = (_saved_bytes(lambda: train(4)) - _saved_bytes(lambda: train(2))) / 2
    return ModelCost(arch=arch, image_size=px, grad_flops=float(_count(lambda: grad(1))),
                     forward_flops=float(_count(forward)), train_flops=float(_count(lambda: train(1))),
                     text_flops=float(_count(text)), grad_bytes=float(grad_bytes), train_bytes=float(train_bytes),
                     vision_params=sum(p.numel() for p in visual.parameters()),
                     total_params=sum(p.numel() for p in clip.parameters()))


def _key(arch: str) -> str:
    config = json.dumps(open_clip.get_model_config(arch), sort_keys=True)
    digest = hashlib.sha256(f"{config}|{torch.__version__}|{version('open_clip_torch')}|{COST_VERSION}".encode())
    return f"{arch.replace('/', '_')}-{digest.hexdigest()[:12]}"


def model_cost(arch: str) -> ModelCost:
    """:func:`count_model_cost` of ``arch`` (with 1 000 classes), from the cache when counted before."""
    register_model_configs()
    path = cache_dir() / f"{_key(arch)}.json"
    try:
        return ModelCost(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    cost = count_model_cost(arch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(cost)))
        os.replace(tmp, path)
    except OSError:  # a read-only home: count again next time
        pass
    return cost
