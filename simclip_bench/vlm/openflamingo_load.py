"""``--vlm openflamingo:DIR``: an OpenFlamingo checkpoint + its language model, with an encoder swapped in.

The folder layout is in :mod:`simclip_bench.vlm.openflamingo`. A checkpoint is OpenFlamingo's state dict
(perceiver, gated cross-attention, input embeddings), possibly wrapped in ``model_state_dict`` with
``module.`` prefixes (RobustVLM's ``EvalModelAdv`` unwraps both). Its ``vision_encoder.*`` keys are skipped
(the encoder is ``--model``'s) and so are the duplicates OpenFlamingo's own module tree holds
(``lang_encoder.old_decoder_blocks.*``, ``lang_encoder.gated_cross_attn_layers.*``). Where OpenFlamingo
loads with ``strict=False``, this loader is strict both ways: every perceiver and cross-attention weight
must come from the checkpoint, and a key that names nothing in the model is refused, so a checkpoint of
another architecture never loads half-way.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from simclip_bench.errors import UserError
from simclip_bench.results.schema import vlm_model_id
from simclip_bench.vlm.base import NATIVE_ENCODER, LoadedVLM, vlm_identity
from simclip_bench.vlm.openflamingo import END_OF_CHUNK, MEDIA, PAD, Flamingo, OpenFlamingoVLM

CHECKPOINTS = ("checkpoint.pt", "checkpoint.safetensors")
SETTINGS_FILE = "openflamingo.json"
DEFAULT_EVERY = 4  # OpenFlamingo-9B-vitl-mpt7b: --cross_attn_every_n_layers 4 (bash/of_eval_9B.sh)
SKIPPED = ("vision_encoder.", "lang_encoder.old_decoder_blocks.", "lang_encoder.gated_cross_attn_layers.")


def _settings(folder: Path) -> dict:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({e.__class__.__name__})") from None
    unknown = set(settings) - {"cross_attn_every_n_layers", "perceiver", "cross_attention"}
    if not isinstance(settings, dict) or unknown:
        raise UserError(f"{path}: unknown settings {sorted(unknown)}; use cross_attn_every_n_layers, perceiver, "
                        "cross_attention")
    return settings


def _checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    path = next((folder / n for n in CHECKPOINTS if (folder / n).is_file()), None)
    if path is None:
        raise UserError(f"openflamingo:{folder}: no {' or '.join(CHECKPOINTS)} there (OpenFlamingo's released "
                        "checkpoint, e.g. from openflamingo/OpenFlamingo-9B-vitl-mpt7b)")
    try:
        if path.suffix == ".safetensors":
            from simclip_bench.models.checkpoint import load_safetensors

            state = load_safetensors(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line for the user
        raise UserError(f"{path} is not a readable checkpoint ({e.__class__.__name__})") from None
    if isinstance(state, dict) and "model_state_dict" in state:
        state = {k.replace("module.", ""): v for k, v in state["model_state_dict"].items()}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    return state


def load_weights(model: Flamingo, state: dict[str, torch.Tensor], source: str) -> None:
    """Load an OpenFlamingo state dict into ``model`` (strict both ways; see the module docstring)."""
    own = model.state_dict()
    wanted = {k: v for k, v in state.items() if not k.startswith(SKIPPED)}
    unknown = sorted(k for k in wanted if k not in own)
    if unknown:
        raise UserError(f"{source}: {len(unknown)} checkpoint key(s) name nothing in this OpenFlamingo "
                        f"(e.g. {', '.join(unknown[:3])}); check cross_attn_every_n_layers and the language model")
    required = [k for k in own if k.startswith("perceiver.") or ".gated_cross_attn_layer." in k]
    missing = [k for k in required if k not in wanted]
    if missing:
        raise UserError(f"{source}: the checkpoint lacks {len(missing)} OpenFlamingo weight(s) "
                        f"(e.g. {', '.join(missing[:3])}); is it an OpenFlamingo checkpoint of this size?")
    shapes = [k for k in wanted if tuple(wanted[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise UserError(f"{source}: {k} has shape {tuple(wanted[k].shape)} in the checkpoint but "
                        f"{tuple(own[k].shape)} here; check the sizes in {SETTINGS_FILE} and the language model")
    model.load_state_dict(wanted, strict=False)


def load_openflamingo(folder: str, encoder_spec: str, device: torch.device, allow_unsafe_pickle: bool = False,
                      shots: int = 0) -> LoadedVLM:
    """OpenFlamingo from ``folder`` with ``encoder_spec`` swapped in (``native``: ViT-L-14 with OpenAI's
    weights, OpenFlamingo's own tower); ``shots`` demonstrations per prompt (0: two text-only ones)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simclip_bench.models.checkpoint import weights_sha256
    from simclip_bench.models.hub import quiet_hub
    from simclip_bench.models.spec import load_model

    root = Path(folder).expanduser()
    if not root.is_dir() or not (root / "lm").is_dir():
        raise UserError(f"--vlm openflamingo:{folder}: expected a folder with {CHECKPOINTS[0]} and lm/ (the language "
                        "model and tokenizer as an HF folder); see docs/vlm.md, 'OpenFlamingo'")
    settings = _settings(root)
    state = _checkpoint(root)
    try:
        with quiet_hub(offline=True):
            tokenizer = AutoTokenizer.from_pretrained(root / "lm")
            lm = AutoModelForCausalLM.from_pretrained(root / "lm", dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the language model in {root / 'lm'}: {str(e).splitlines()[0][:200]}") from None
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_CHUNK, MEDIA]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    lm.resize_token_embeddings(len(tokenizer))
    loaded = load_model("ViT-L-14:openai" if encoder_spec == NATIVE_ENCODER else encoder_spec, "cpu",
                        allow_unsafe_pickle)
    visual = loaded.model.clip.visual
    every = int(settings.get("cross_attn_every_n_layers", DEFAULT_EVERY))
    try:
        model = Flamingo(visual, lm, tokenizer.encode(MEDIA)[-1], int(visual.transformer.width), every,
                         settings.get("perceiver"), settings.get("cross_attention"))
    except (TypeError, ValueError) as e:
        raise UserError(f"openflamingo:{folder}: {e}") from None
    load_weights(model, state, str(root))
    digest = weights_sha256(model, exclude=("vision_encoder.",))
    model.to(device)
    enc = loaded.model.encoder
    name = root.resolve().name
    vlm = OpenFlamingoVLM(model, tokenizer, loaded.model.image_size, enc.mean.flatten().tolist(),
                          enc.std.flatten().tolist(), shots=shots, name=name, every=every)
    return LoadedVLM(vlm, f"openflamingo:{folder}", encoder_spec, vlm_model_id(name, loaded.model_id),
                     loaded.checkpoint_hash, vlm_identity(digest, vlm))
