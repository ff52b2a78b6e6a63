"""Encoder checkpoints: safetensors weights of the vision tower plus JSON metadata.

A fine-tuned encoder is stored as the open_clip ``visual`` state dict, in safetensors (never a
pickle), with metadata naming the base model it was fine-tuned from. Loading rebuilds the base
model and swaps in the vision tower, exactly what a VLM user does with a robust encoder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

ENCODER_FORMAT = "simclip-bench.encoder.v1"
ENCODER_FILENAME = "encoder.safetensors"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_permissions(path: str | Path) -> None:
    """The mode a plain ``open()`` (a file) or ``mkdir()`` (a folder) would give ``path`` under the umask.

    Temporary files and folders (``mkstemp``, ``mkdtemp``, and the atomic writers of libraries such as
    transformers' ``save_pretrained``) are created private (0600 / 0700); published as they are, a model
    or a result table would be unreadable for everyone else on a shared machine."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file ordinary permissions and rename it into place."""
    _ordinary_permissions(tmp)
    os.replace(tmp, path)


def publish_dir(tmp: Path, out: Path) -> None:
    """Rename the folder ``tmp``, assembled beside ``out``, into place as ``out`` (absent or an empty folder),
    with everything in it given ordinary permissions (see :func:`_ordinary_permissions`), whoever wrote it."""
    for folder, _, files in os.walk(tmp):
        for name in files:
            _ordinary_permissions(os.path.join(folder, name))
        _ordinary_permissions(folder)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at ``path`` only when the block ends without error
    (temporary file in the same folder, fsync, rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.save_file`` through a temporary file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_encoder(visual: nn.Module, path: Path, base_model: str, arch: str, extra: dict | None = None) -> str:
    """Save a vision tower; returns its content hash (see :func:`state_dict_sha256`)."""
    state = {k: v.float() for k, v in visual.state_dict().items()}
    digest = state_dict_sha256(state)
    meta = {"format": ENCODER_FORMAT, "base_model": base_model, "arch": arch, "sha256": digest,
            "extra": json.dumps(extra or {})}
    save_safetensors_atomic(state, path, meta)
    return digest


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def weights_sha256(module: torch.nn.Module, exclude: tuple[str, ...] = ()) -> str:
    """A hash of a module's parameters and buffers (names, dtypes, shapes, raw bytes), leaving out those whose
    name starts with one of ``exclude`` (e.g. a VLM's swapped vision tower, hashed on its own). Raw bytes, no
    conversion: about 10 s for a 7B language model on a CPU, once per load."""
    h = hashlib.sha256()
    state = module.state_dict(keep_vars=False)
    for name in sorted(state):
        if name.startswith(exclude):
            continue
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of tensor names, dtypes, shapes and values (float32), independent of file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().float().contiguous().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
