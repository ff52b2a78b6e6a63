"""Public robust CLIP checkpoints people compare against, with their provenance. Nothing here downloads.

``spec`` is what ``--model`` takes when the checkpoint loads through open_clip's hub schema; it is
None when the release is a bare vision-tower file that needs converting first.
"""
from __future__ import annotations

from dataclasses import dataclass

ROBUSTVLM_PAPER = ("Schlarmann, Singh, Croce, Hein: Robust CLIP (ICML 2024), arXiv 2402.12336; "
                   "github.com/chs20/RobustVLM")
TECOA_PAPER = "Mao et al.: Understanding Zero-Shot Adversarial Robustness (ICLR 2023), trained by RobustVLM"
SIMCLIP_PAPER = "Hossain & Imteaj: Sim-CLIP (2024), arXiv 2407.14971; github.com/speedlab-git/SimCLIP"


@dataclass(frozen=True)
class KnownCheckpoint:
    """One released robust encoder: where it lives, what it was fine-tuned from, and how."""

    name: str
    spec: str | None
    source: str
    arch: str
    base_tag: str
    objective: str
    eps: str
    paper: str
    cite: str
    note: str = ""


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {c.name: c for c in (
    KnownCheckpoint("fare2", "hf-hub:chs20/fare2-clip", "https://huggingface.co/chs20/fare2-clip",
                    "ViT-L-14", "openai", "fare", "2/255", ROBUSTVLM_PAPER, "Schlarmann et al. 2024"),
    KnownCheckpoint("fare4", "hf-hub:chs20/fare4-clip", "https://huggingface.co/chs20/fare4-clip",
                    "ViT-L-14", "openai", "fare", "4/255", ROBUSTVLM_PAPER, "Schlarmann et al. 2024"),
    KnownCheckpoint("tecoa2", "hf-hub:chs20/tecoa2-clip", "https://huggingface.co/chs20/tecoa2-clip",
                    "ViT-L-14", "openai", "tecoa", "2/255", TECOA_PAPER, "Mao et al. 2023"),
    KnownCheckpoint("tecoa4", "hf-hub:chs20/tecoa4-clip", "https://huggingface.co/chs20/tecoa4-clip",
                    "ViT-L-14", "openai", "tecoa", "4/255", TECOA_PAPER, "Mao et al. 2023"),
    # Ids from the Models table of speedlab-git/SimCLIP's README: pickled vision-tower state dicts, not hub models.
    KnownCheckpoint("simclip2", None, "https://huggingface.co/hossainzarif19/SimCLIP/blob/main/simclip2.pt",
                    "ViT-L-14", "openai", "simclip-anchored", "2/255", SIMCLIP_PAPER, "Hossain & Imteaj 2024",
                    "vision-tower state dict (.pt pickle); convert to safetensors before use"),
    KnownCheckpoint("simclip4", None, "https://huggingface.co/hossainzarif19/SimCLIP/blob/main/simclip4.pt",
                    "ViT-L-14", "openai", "simclip-anchored", "4/255", SIMCLIP_PAPER, "Hossain & Imteaj 2024",
                    "vision-tower state dict (.pt pickle); convert to safetensors before use"),
)}


def known_by_spec(spec: str) -> KnownCheckpoint | None:
    """The known checkpoint that ``spec`` names (its hub id or its short name), or None."""
    for c in KNOWN_CHECKPOINTS.values():
        if spec in (c.spec, c.name):
            return c
    return None
