"""The architectures of the catalog: every vision tower behind a model ``simclip ls models`` lists or a published
table quotes, as the open_clip config that builds it, and what each can and cannot go through.

``tests/test_catalog_contract.py`` builds each one with random weights (:mod:`simclip_bench.models.random_init`,
nothing downloaded) and runs it through APGD, one training step, the open_clip export, the HF
``CLIPVisionModel`` export into a LLaVA-shaped model, and the masking checks. A step an architecture cannot
take is stated here (``hf_export``: why not) and checked there, so ``simclip ls models`` says the same.
"""
from __future__ import annotations

from dataclasses import dataclass

HF_NOT_A_VIT = ("its vision tower is a timm ConvNeXt, and HF CLIPVisionModel (what LLaVA loads) is a ViT; "
                "use --format open_clip")
HF_CLIPA = ("its tower has no ln_pre and average-pools its tokens (CLIPA-style), which HF CLIPVisionModel cannot "
            "represent; use --format open_clip")


@dataclass(frozen=True)
class CatalogArchitecture:
    """One architecture of the catalog.

    ``config``: the open_clip model config (``open_clip.list_models()``) that builds it, QuickGELU variants
    where the weights use QuickGELU (every OpenAI tag); ``image_size`` in pixels; ``used_by``: the catalog
    entries or published rows on it; ``checkpoints``: the names of the catalog checkpoints
    (:data:`~simclip_bench.models.known_checkpoints.KNOWN_CHECKPOINTS`) built on it; ``hf_export``: empty when it
    exports to HF ``CLIPVisionModel``, else the reason it cannot; ``note``: how sure the mapping is.
    """

    name: str
    config: str
    image_size: int
    used_by: str
    checkpoints: tuple[str, ...] = ()
    hf_export: str = ""
    note: str = ""


CATALOG_ARCHITECTURES: dict[str, CatalogArchitecture] = {a.name: a for a in (
    CatalogArchitecture("simclip-tiny", "simclip-tiny", 32, "tiny-clip (built-in)"),
    CatalogArchitecture("ViT-B/32 (OpenAI)", "ViT-B-32-quickgelu", 224,
                        "RobustVLM's TeCoA/FARE ViT-B/32 OpenAI rows (published table)"),
    CatalogArchitecture("ViT-B/32 (LAION)", "ViT-B-32", 224, "RobustVLM's TeCoA⁴/FARE⁴ ViT-B/32 LAION 2B rows"),
    CatalogArchitecture("ViT-B/16 (LAION)", "ViT-B-16", 224, "RobustVLM's TeCoA⁴/FARE⁴ ViT-B/16 LAION 2B rows"),
    CatalogArchitecture("ViT-L/14 (OpenAI)", "ViT-L-14-quickgelu", 224,
                        "fare2, fare4, tecoa2, tecoa4, simclip2, simclip4 (ViT-L-14:openai)",
                        checkpoints=("fare2", "fare4", "tecoa2", "tecoa4", "simclip2", "simclip4")),
    CatalogArchitecture("ViT-L/14-336 (OpenAI)", "ViT-L-14-336-quickgelu", 336,
                        "LLaVA-1.5's own vision tower (--model native)"),
    CatalogArchitecture("ViT-H/14 (LAION)", "ViT-H-14", 224, "open_clip ViT-H-14 laion2b_s32b_b79k"),
    CatalogArchitecture("ΔCLIP-H/14-336", "ViT-H-14-CLIPA-336", 336,
                        "delta-clip-h14-336 (hf-hub:zw123/delta_clip_h14_336)", checkpoints=("delta-clip-h14-336",),
                        hf_export=HF_CLIPA,
                        note="inferred, not read from the hub config (offline): ΔCLIP was trained with CLIPA's JAX "
                             "code (ImageNet mean/std, bilinear, 336 px in the repository's bv336 preprocessor "
                             "config); its repository loads it through an open_clip fork that adds a BERT tokenizer "
                             "(vocab_path, tensorflow_text), which stock open_clip lacks"),
    CatalogArchitecture("ConvNeXt-B (LAION)", "convnext_base_w", 256,
                        "RobustVLM's TeCoA⁴/FARE⁴ ConvNeXt-B LAION 2B rows "
                        "(convnext_base_w laion2B-s13B-b82K-augreg)",
                        hf_export=HF_NOT_A_VIT),
)}


def hf_export_status(arch: CatalogArchitecture) -> str:
    """``yes`` or ``no: <why>``, as ``simclip ls models`` prints it."""
    return "yes" if not arch.hf_export else f"no: {arch.hf_export}"


def checkpoint_config(checkpoint) -> str:
    """The open_clip config of a catalog checkpoint (:class:`~simclip_bench.models.known_checkpoints.
    KnownCheckpoint`): its catalog architecture where one names it, else its ``arch`` (QuickGELU for OpenAI bases)."""
    for arch in CATALOG_ARCHITECTURES.values():
        if checkpoint.name in arch.checkpoints:
            return arch.config
    return f"{checkpoint.arch}-quickgelu" if checkpoint.base_tag == "openai" else checkpoint.arch
