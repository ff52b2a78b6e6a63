"""Reading a released vision-tower state dict (FARE's ``fare_eps_4.pt``, Sim-CLIP's ``simclip4.pt``).

These releases are the open_clip ``model.visual`` state dict saved with ``torch.save``: RobustVLM's README
and Sim-CLIP's ``Usage`` load them with ``model.visual.load_state_dict(torch.load(path))``, and Sim-CLIP's
trainer saves ``unwrap_model(model).model.state_dict()`` (DataParallel already unwrapped), so the keys are
those of ``visual`` with no prefix. A chain of small, named fixes accepts the layouts met in practice:

* ``{"vision_encoder_state_dict": ...}``: RobustVLM's ``CLIP_eval/eval_utils.py`` reads TeCoA files so;
* ``{"state_dict": ...}``: a training checkpoint (open_clip's ``load_checkpoint`` unwraps it too);
* every key prefixed ``module.`` (saved from DataParallel/DDP) or ``visual.`` (the tower cut out of a
  whole CLIP): the prefix is dropped.

A whole CLIP checkpoint (vision and text keys) is refused with a pointer to ``ARCH:PATH``. Files are read
with ``torch.load(weights_only=True)`` (or safetensors): tensors only, nothing unpickled that could run code.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError

from simclip_bench.errors import UserError, first_line
from simclip_bench.models.checkpoint import load_safetensors

UNSAFE_PICKLE_FLAG = "--allow-unsafe-pickle"
WRAPPER_KEYS = ("vision_encoder_state_dict", "state_dict")
STRIPPED_PREFIXES = ("module.", "visual.")


TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy (protocol >= 2) pickle


def _read(path: Path, allow_unsafe_pickle: bool) -> object:
    with open(path, "rb") as f:
        start = f.read(4)
    # torch answers any foreign file with its weights-only refusal; say what it is instead
    if path.suffix != ".safetensors" and not start.startswith(TORCH_FILE_STARTS):
        raise UserError(f"{path} is not a readable checkpoint: neither a torch.save file nor safetensors")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(path)
        except (SafetensorError, OSError) as e:
            raise UserError(f"{path} is not a readable safetensors file ({first_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as e:
        if allow_unsafe_pickle:
            raise UserError(f"{path} is not a readable checkpoint ({first_line(e)})") from None
        raise UserError(f"refusing to load {path}: it is a pickle that needs more than plain tensors "
                        f"({first_line(e)[:120]}); if you trust this file, pass {UNSAFE_PICKLE_FLAG} "
                        "(it can run arbitrary code)") from None
    except (RuntimeError, OSError, ValueError, EOFError, AttributeError, ImportError, KeyError) as e:
        raise UserError(f"{path} is not a readable checkpoint ({first_line(e)})") from None


def _strip_common_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_vision_tower(file: str, allow_unsafe_pickle: bool = False) -> tuple[Path, dict[str, torch.Tensor]]:
    """The vision-tower state dict in ``file``, its keys those of open_clip's ``model.visual``.

    UserError (one line) when the file is missing, unreadable, a pickle needing more than tensors (unless
    ``allow_unsafe_pickle``), not a state dict of tensors, or a whole CLIP checkpoint.
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"{file}: no such file" + (" (it is a folder)" if path.is_dir() else "")
                        + "; after '=' give the vision-tower weights file, e.g. simclip4=/data/simclip4.pt")
    obj = _read(path, allow_unsafe_pickle)
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{path} is not a state dict: it holds {'an empty dict' if obj == {} else type(obj).__name__}"
                        "; expected the vision tower's parameters by name, as model.visual.state_dict() saves them")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{path} is not a state dict of tensors; expected the vision tower's parameters by name, "
                        "as model.visual.state_dict() saves them")
    state = _strip_common_prefix(dict(obj))
    if any(k.startswith("visual.") for k in state):
        raise UserError(f"{path} is a whole CLIP checkpoint (vision and text towers), not a vision tower; "
                        f"load it as ARCH:PATH, e.g. --model ViT-L-14:{path}")
    return path, state
