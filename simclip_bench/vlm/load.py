"""One VLM spec plus one encoder spec -> a VLM with that vision encoder swapped in.

``--vlm`` accepts:

* ``tiny-vlm`` (default): the built-in tiny VLM (shipped weights); the encoder must be a ``simclip-tiny``
  tower (``tiny-clip`` or a run fine-tuned from it); a tiny-VLM weights file path works the same way;
* ``llava:<model>``: an HF transformers LLaVA (``LlavaForConditionalGeneration``), ``<model>`` a hub id such
  as ``llava-hf/llava-1.5-7b-hf`` (downloaded by transformers when online, or read from its cache) or a local
  folder. ``--model native`` keeps LLaVA's own vision tower; any other encoder spec replaces it
  (see :mod:`simclip_bench.vlm.llava`); with no ``--model`` the encoder is ``ViT-L-14:openai`` at 224 px, as
  RobustVLM puts it in;
* ``openflamingo:<folder>``: OpenFlamingo (checkpoint + language model, :mod:`simclip_bench.vlm.openflamingo`);
  ``--model native`` is its own ViT-L-14 (OpenAI weights); ``--shots`` sets its demonstrations.

The encoder spec is anything ``--model`` accepts (:func:`simclip_bench.models.spec.load_model`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from simclip_bench.errors import UserError
from simclip_bench.models.checkpoint import weights_sha256
from simclip_bench.models.spec import load_model
from simclip_bench.results.schema import vlm_model_id
from simclip_bench.vlm.base import NATIVE_ENCODER, LoadedVLM, vlm_identity
from simclip_bench.vlm.llava_folder import check_llava_source

DEFAULT_VLM = "tiny-vlm"
LLAVA, OPENFLAMINGO = "llava:", "openflamingo:"


def check_vlm_spec(spec: str) -> None:
    """Reject a malformed ``--vlm`` before anything is loaded."""
    if spec.startswith(LLAVA) and spec[len(LLAVA):].strip():  # first: a LLaVA folder may end in .safetensors
        check_llava_source(spec[len(LLAVA):].strip())
        return
    if spec.startswith(OPENFLAMINGO) and spec[len(OPENFLAMINGO):].strip():
        return
    if spec == DEFAULT_VLM or spec.endswith(".safetensors"):
        if spec != DEFAULT_VLM and not Path(spec).expanduser().is_file():
            raise UserError(f"--vlm {spec}: no such tiny-VLM weights file")
        return
    raise UserError(f"unknown --vlm {spec!r}; use {DEFAULT_VLM}, a tiny-VLM .safetensors file, "
                    "llava:<hub id or folder> (e.g. llava:llava-hf/llava-1.5-7b-hf) or openflamingo:<folder>")


def load_vlm(vlm_spec: str, encoder_spec: str, device: torch.device | str = "cpu",
             allow_unsafe_pickle: bool = False, shots: int = 0) -> LoadedVLM:
    """Load ``vlm_spec`` with the vision encoder ``encoder_spec`` swapped in (frozen, eval mode).

    ``allow_unsafe_pickle`` (default False) is passed on to :func:`~simclip_bench.models.spec.load_model`;
    ``shots`` (OpenFlamingo only) is the number of demonstrations with images per prompt.
    """
    check_vlm_spec(vlm_spec)
    device = torch.device(device)
    if shots and not vlm_spec.startswith(OPENFLAMINGO):
        raise UserError(f"--shots {shots} applies to --vlm openflamingo:... only (LLaVA and the tiny VLM are "
                        "evaluated zero-shot, as RobustVLM does)")
    if vlm_spec.startswith(LLAVA):
        from simclip_bench.vlm.llava import load_llava

        return load_llava(vlm_spec[len(LLAVA):].strip(), encoder_spec, device, allow_unsafe_pickle)
    if vlm_spec.startswith(OPENFLAMINGO):
        from simclip_bench.vlm.openflamingo_load import load_openflamingo

        return load_openflamingo(vlm_spec[len(OPENFLAMINGO):].strip(), encoder_spec, device, allow_unsafe_pickle,
                                 shots)
    from simclip_bench.vlm.tiny import TINY_VLM_WEIGHTS, TinyVLM, load_tiny_vlm_head

    if encoder_spec == NATIVE_ENCODER:
        encoder_spec = "tiny-clip"
    head, vocab, _ = load_tiny_vlm_head(TINY_VLM_WEIGHTS if vlm_spec == DEFAULT_VLM else Path(vlm_spec).expanduser())
    loaded = load_model(encoder_spec, device, allow_unsafe_pickle)
    if loaded.arch != head.cfg.vision_arch:
        raise UserError(f"the tiny VLM reads a {head.cfg.vision_arch!r} vision tower, but --model {encoder_spec} is "
                        f"{loaded.arch!r}; use tiny-clip or a run fine-tuned from it")
    name = "tiny-vlm" if vlm_spec == DEFAULT_VLM else Path(vlm_spec).stem
    vlm = TinyVLM(loaded.model.encoder, head.to(device), vocab, loaded.model.image_size)
    return LoadedVLM(vlm, vlm_spec, encoder_spec, vlm_model_id(name, loaded.model_id), loaded.checkpoint_hash,
                     vlm_identity(weights_sha256(head), vlm))
