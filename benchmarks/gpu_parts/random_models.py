"""Randomly initialised open_clip models (seed 0, no weights, nothing downloaded), wrapped as the loader wraps
open_clip, and a way to hand them to the training session as ``random:ARCH@PX``."""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
from unittest import mock

import torch


@functools.lru_cache(maxsize=4)
def _random_clip(arch: str, image_size: int):
    """A randomly initialised open_clip model (seed 0, no weights, nothing downloaded), kept on the CPU."""
    import open_clip

    torch.manual_seed(0)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights are loaded: intended
    try:
        return open_clip.create_model(arch, force_image_size=image_size)
    finally:
        root.setLevel(level)


def random_model(arch: str, image_size: int, device: torch.device):
    """A fresh copy of the random-init ``arch`` at ``image_size`` px, wrapped like the loader wraps open_clip."""
    import open_clip

    from simclip_bench.models.open_clip_build import wrap_open_clip

    return wrap_open_clip(copy.deepcopy(_random_clip(arch, image_size)), open_clip.get_tokenizer(arch)).to(device)


@contextlib.contextmanager
def random_init_specs():
    """Lets the training session load ``random:ARCH@PX`` (a random-init model) without a weights file."""
    from simclip_bench.models.spec import LoadedModel
    from simclip_bench.train import session

    real = session.load_model

    def load(spec, device="cpu", allow_unsafe_pickle=False):
        if not str(spec).startswith("random:"):
            return real(spec, device, allow_unsafe_pickle)
        arch, px = spec[len("random:"):].split("@")
        return LoadedModel(spec=spec, model_id=spec, arch=arch, model=random_model(arch, int(px), torch.device(device)),
                           checkpoint_hash="random-init")

    with mock.patch.object(session, "load_model", load):
        yield


