"""Public robust CLIP encoders people compare against, with their provenance. Nothing here downloads.

Every fact is taken from the release's own repository or model card; ``source`` (and the comment above
each entry) says where. ``spec`` is what ``--model`` takes: an open_clip hub id, or, for a release that
is a bare vision-tower file (Sim-CLIP), ``NAME=/path/to/FILE``: the catalog supplies the base model, the
file the vision tower (see :mod:`simclip_bench.models.spec`).

``eps`` is the l-inf training radius in pixel units as humans write it; ``reported_attack`` is the attack
behind the numbers the release reports, so a reader knows what a quoted number was measured under.
"""
from __future__ import annotations

from dataclasses import dataclass

ROBUSTVLM_PAPER = ("Schlarmann, Singh, Croce, Hein: Robust CLIP (ICML 2024), arXiv 2402.12336; "
                   "github.com/chs20/RobustVLM")
TECOA_PAPER = "Mao et al.: Understanding Zero-Shot Adversarial Robustness (ICLR 2023), trained by RobustVLM"
SIMCLIP_PAPER = "Hossain & Imteaj: Sim-CLIP (2024), arXiv 2407.14971; github.com/speedlab-git/SimCLIP"
DELTACLIP_PAPER = ("Wang, Xie, Bartoldson, Kailkhura: Double Visual Defense (2025), arXiv 2501.09446; "
                   "github.com/zw615/Double_Visual_Defense")

# github.com/chs20/RobustVLM: README "Evaluation" (CLIP_benchmark/bash/run_benchmark_adv.sh: --attack aa,
# 1000 samples per dataset) and bash/llava_eval.sh (--attack ensemble --steps 100).
ROBUSTVLM_ATTACK = ("zero-shot: APGD-CE (5 restarts) + APGD-T, 100 iterations each, l-inf, 1000 samples per "
                    "dataset (CLIP_benchmark --attack aa); captioning/VQA: RobustVLM's APGD ensemble, 100 steps")
# github.com/speedlab-git/SimCLIP: bash/llava_eval_coco.sh, bash/of_eval_9B_coco.sh (--attack apgd --steps 100),
# CLIP_benchmark/bash/run_benchmark_adv.sh (--attack aa).
SIMCLIP_ATTACK = ("captioning/VQA: APGD, 100 steps, l-inf (bash/llava_eval_*.sh, bash/of_eval_9B_*.sh); "
                  "zero-shot: CLIP_benchmark --attack aa (APGD-CE + APGD-T)")


@dataclass(frozen=True)
class KnownCheckpoint:
    """One released robust encoder: where it lives, what it was trained from, how, and how it was attacked.

    ``tower_file`` is set when the release is a bare vision-tower state dict (its file name); the base
    model ``arch:base_tag`` then supplies the text tower and the preprocessing.
    """

    name: str
    spec: str
    source: str
    arch: str
    base_tag: str
    objective: str
    eps: str
    paper: str
    cite: str
    reported_attack: str
    note: str = ""
    tower_file: str = ""

    @property
    def base_spec(self) -> str:
        """The ``--model`` spec of the model this one was fine-tuned from ('' when trained from scratch)."""
        return f"{self.arch}:{self.base_tag}" if self.base_tag else ""


def _tower_spec(name: str, tower_file: str) -> str:
    return f"{name}=/path/to/{tower_file}"


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {c.name: c for c in (
    # github.com/chs20/RobustVLM README, "Models" table (eps, objective) and huggingface.co/chs20 (hub ids).
    KnownCheckpoint("fare2", "hf-hub:chs20/fare2-clip", "https://huggingface.co/chs20/fare2-clip",
                    "ViT-L-14", "openai", "fare", "2/255", ROBUSTVLM_PAPER, "Schlarmann et al. 2024",
                    ROBUSTVLM_ATTACK),
    KnownCheckpoint("fare4", "hf-hub:chs20/fare4-clip", "https://huggingface.co/chs20/fare4-clip",
                    "ViT-L-14", "openai", "fare", "4/255", ROBUSTVLM_PAPER, "Schlarmann et al. 2024",
                    ROBUSTVLM_ATTACK),
    KnownCheckpoint("tecoa2", "hf-hub:chs20/tecoa2-clip", "https://huggingface.co/chs20/tecoa2-clip",
                    "ViT-L-14", "openai", "tecoa", "2/255", TECOA_PAPER, "Mao et al. 2023", ROBUSTVLM_ATTACK),
    KnownCheckpoint("tecoa4", "hf-hub:chs20/tecoa4-clip", "https://huggingface.co/chs20/tecoa4-clip",
                    "ViT-L-14", "openai", "tecoa", "4/255", TECOA_PAPER, "Mao et al. 2023", ROBUSTVLM_ATTACK),
    # github.com/speedlab-git/SimCLIP README: "Models" table (files), "Adversarial training" (ViT-L-14 openai,
    # --eps 4 / 2), "Usage" (a state dict of the open_clip vision tower). train/adversarial_training_simclip.py
    # saves unwrap_model(model).model.state_dict(), i.e. open_clip VisionTransformer keys with no prefix.
    KnownCheckpoint("simclip2", _tower_spec("simclip2", "simclip2.pt"),
                    "https://huggingface.co/hossainzarif19/SimCLIP/blob/main/simclip2.pt",
                    "ViT-L-14", "openai", "simclip-anchored", "2/255", SIMCLIP_PAPER, "Hossain & Imteaj 2024",
                    SIMCLIP_ATTACK, "vision-tower state dict (.pt); download it, then --model simclip2=FILE",
                    tower_file="simclip2.pt"),
    KnownCheckpoint("simclip4", _tower_spec("simclip4", "simclip4.pt"),
                    "https://huggingface.co/hossainzarif19/SimCLIP/blob/main/simclip4.pt",
                    "ViT-L-14", "openai", "simclip-anchored", "4/255", SIMCLIP_PAPER, "Hossain & Imteaj 2024",
                    SIMCLIP_ATTACK, "vision-tower state dict (.pt); download it, then --model simclip4=FILE",
                    tower_file="simclip4.pt"),
    # huggingface.co/zw123/delta_clip_h14_336 (model card: DeltaCLIP-H/14-336, adversarially pre-trained on
    # web-scale image-text data, open_clip files; tags Recap-DataComp-1B, DataComp-1B; arXiv 2501.09446).
    # Attack and eps: github.com/zw615/Double_Visual_Defense CLIP_benchmark/scripts/dvd_clip_h14_hf_adv.sh
    # (ATTACK=aa, EPS=4, 1000 samples). The training radius itself is not stated in the repository or the card.
    KnownCheckpoint("delta-clip-h14-336", "hf-hub:zw123/delta_clip_h14_336",
                    "https://huggingface.co/zw123/delta_clip_h14_336",
                    "ViT-H-14 (336 px)", "", "adversarial pre-training", "4/255", DELTACLIP_PAPER,
                    "Wang et al. 2025",
                    "zero-shot: CLIP_benchmark --attack aa (APGD-CE + APGD-T), eps 4/255, 1000 samples per dataset",
                    "trained from scratch, not fine-tuned; eps is the radius of the repository's robustness "
                    "evaluation (the training radius is not stated in the repository or the model card)"),
)}


def known_by_name(name: str) -> KnownCheckpoint | None:
    """The released vision-tower file called ``name`` in the catalog (``simclip4``), or None."""
    c = KNOWN_CHECKPOINTS.get(name)
    return c if c is not None and c.tower_file else None


def known_by_spec(spec: str) -> KnownCheckpoint | None:
    """The known checkpoint that ``spec`` names, or None: its hub id, its short name, ``NAME=FILE`` of a
    vision-tower release, or a plain path to a file named like one (``/data/simclip4.pt``)."""
    for c in KNOWN_CHECKPOINTS.values():
        if spec in (c.spec, c.name):
            return c
    if "=" in spec:
        return known_by_name(spec.split("=", 1)[0].strip())
    name = spec.replace("\\", "/").rsplit("/", 1)[-1]
    return next((c for c in KNOWN_CHECKPOINTS.values() if c.tower_file and c.tower_file == name), None)
