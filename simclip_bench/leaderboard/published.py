"""Published numbers, quoted and not re-measured: the field's reported results, with their attacks and sources.

The leaderboard page shows these in a separate table ("Published numbers — quoted, not re-measured").
They are never merged into, averaged with or ranked against the rows this project measures: the
attacks, sample counts, datasets and even the metric scales differ from source to source, and
from our own protocol, so a quoted cell is only comparable with the cells of its own table.

Each :class:`QuotedTable` holds one table as a README or model card published it: the cells are
copied as strings, exactly as printed (including trailing zeros and the source's own rounding);
only markup is dropped (HTML superscripts are written as Unicode superscripts, bold markers removed)
and merged cells (``rowspan``/``colspan``) are repeated or folded into the column names. ``attack``
says, in our words, which attack the robust numbers come from and where that was read; where a
source does not name its attack next to the table, ``attack`` says so rather than guessing.

Read on 2026-11-30 from the stored snapshots of the repositories named in ``source`` (the URLs
pin the commit that was read).
"""
from __future__ import annotations

from dataclasses import dataclass

READ_ON = "2026-11-30"


@dataclass(frozen=True)
class QuotedTable:
    """One table of numbers as a paper or repository published them."""

    key: str  # short unique id, e.g. "robustvlm-vitl14"
    title: str  # e.g. "RobustVLM README: ViT-L-14 encoders in LLaVA-1.5 and OpenFlamingo"
    source: str  # the URL the numbers are read from (https://...)
    attack: str  # the attack behind the robust numbers, in words (name, iterations, eps, norm, samples)
    columns: tuple[str, ...]  # header cells, first is the model column
    rows: tuple[tuple[str, ...], ...]  # cells as published (strings, same length as columns)
    note: str = ""  # anything needed to read it (units, which datasets are averaged)


_ROBUSTVLM_COMMIT = "7de10ee209f169d415c07aa0abaae4806c402b14"
_SIMCLIP_COMMIT = "2388a87f496b1358463e45572d1e96ebd3671761"
_TGA_ZSR_COMMIT = "663fe573dc9609893bb47b2d8303c034d9dd2ded"


def _robustvlm_columns() -> tuple[str, ...]:
    """The README's three tables (clean, 2/255, 4/255) share five columns; here they sit side by side."""
    tasks = (
        "Zero-shot avg",
        "OpenFlamingo 9B COCO",
        "OpenFlamingo 9B TextVQA",
        "LLaVA 1.5 7B COCO",
        "LLaVA 1.5 7B TextVQA",
    )
    return ("Model",) + tuple(f"{task}, {setting}" for setting in ("clean", "2/255", "4/255") for task in tasks)


ROBUSTVLM_VITL14 = QuotedTable(
    key="robustvlm-vitl14",
    title="RobustVLM README: ViT-L/14 CLIP encoders, zero-shot and in OpenFlamingo 9B / LLaVA 1.5 7B",
    source=f"https://github.com/chs20/RobustVLM/blob/{_ROBUSTVLM_COMMIT}/README.md",
    attack=(
        "Untargeted l-inf attacks at eps 2/255 and 4/255 (the clean columns are not attacked). The README names only "
        "the norm and radius; the attack is read from the repository's evaluation code. Zero-shot: AutoAttack "
        "version='custom' running APGD-CE then APGD-T (APGD-CE alone on 2-class datasets) with AutoAttack's defaults, "
        "100 iterations each (APGD-CE 5 restarts, APGD-T 9 target classes), 1000 samples per dataset "
        "(CLIP_benchmark/bash/run_benchmark_adv.sh). VLM tasks: the 'ensemble' attack of vlm_eval/run_evaluation.py, "
        "i.e. APGD runs in half precision against ground-truth references 0 to 4 in turn (five runs), then one"
        " APGD run in single precision started from the best perturbation so far, keeping the worst score per image; "
        "100 steps, 500 samples, zero-shot prompting (bash/llava_eval.sh, bash/of_eval_9B.sh). The paper (arXiv "
        "2402.12336) was not available to check its wording."
    ),
    columns=_robustvlm_columns(),
    rows=(
        ("OpenAI", "73.1", "79.7", "23.8", "115.5", "37.1",
         "0.0", "1.5", "0.0", "4.0", "0.5",
         "0.0", "1.1", "0.0", "3.1", "0.0"),
        ("TeCoA²", "60.0", "73.5", "16.6", "98.4", "24.1",
         "43.6", "31.6", "3.5", "44.2", "12.1",
         "27.0", "21.2", "2.1", "30.3", "8.8"),
        ("FARE²", "67.0", "79.1", "21.6", "109.9", "31.9",
         "43.1", "34.2", "4.1", "53.6", "14.7",
         "20.5", "19.5", "1.9", "31.0", "9.1"),
        ("TeCoA⁴", "54.2", "66.9", "15.4", "88.3", "20.7",
         "42.3", "28.5", "2.1", "50.9", "12.6",
         "31.9", "21.6", "1.8", "35.3", "9.3"),
        ("FARE⁴", "61.1", "74.1", "18.6", "102.4", "27.6",
         "45.9", "30.9", "3.4", "57.1", "15.8",
         "32.4", "22.8", "2.9", "40.9", "10.9"),
    ),
    note=(
        "The README prints three tables (clean, l-inf 2/255, l-inf 4/255) with the same columns and rows; they are "
        "joined side by side here. The superscript is the training radius (TeCoA²: trained at 2/255); all are OpenAI "
        "ViT-L/14 fine-tuned on ImageNet. 'Zero-shot avg' is CLIP alone, averaged over the paper's zero-shot datasets "
        "(listed in the paper, not the README). The README does not name the metrics; its evaluation code scores COCO "
        "with CIDEr and TextVQA with VQA accuracy. The first row is spelt 'OpenAI' in the clean table and 'Openai' in "
        "the two adversarial ones."
    ),
)

ROBUSTVLM_BASE = QuotedTable(
    key="robustvlm-base",
    title="RobustVLM README: additional base-sized robust CLIP models, zero-shot",
    source=f"https://github.com/chs20/RobustVLM/blob/{_ROBUSTVLM_COMMIT}/README.md",
    attack=(
        "l-inf at eps 1/255, 2/255 and 4/255. The README does not name the attack beside this table and says the rows "
        "other than the first four come from the follow-up project fra31/perceptual-metrics; the README's own zero-"
        "shot evaluation script runs APGD-CE + APGD-T (AutoAttack 'custom', 100 iterations)."
    ),
    columns=("Model", "Backbone", "Clean", "Adv. 1/255", "Adv. 2/255", "Adv. 4/255"),
    rows=(
        ("TeCoA¹", "ViT-B/32 OpenAI", "53.1", "38.8", "26.6", "9.6"),
        ("FARE¹", "ViT-B/32 OpenAI", "60.5", "38.0", "20.1", "2.9"),
        ("TeCoA⁴", "ViT-B/32 OpenAI", "44.0", "38.2", "33.1", "23.6"),
        ("FARE⁴", "ViT-B/32 OpenAI", "48.6", "40.6", "33.7", "21.9"),
        ("TeCoA⁴", "ViT-B/32 LAION 2B", "46.8", "40.6", "34.5", "23.3"),
        ("FARE⁴", "ViT-B/32 LAION 2B", "53.8", "44.4", "35.5", "21.2"),
        ("TeCoA⁴", "ViT-B/16 LAION 2B", "51.5", "45.0", "38.4", "26.4"),
        ("FARE⁴", "ViT-B/16 LAION 2B", "56.6", "47.7", "39.2", "23.5"),
        ("TeCoA⁴", "ConvNeXt-B LAION 2B", "56.2", "50.4", "44.1", "31.8"),
        ("FARE⁴", "ConvNeXt-B LAION 2B", "60.2", "52.3", "44.1", "28.4"),
    ),
    note=(
        "Zero-shot classification accuracy as the README reports it (no unit given); it does not say which datasets "
        "are averaged. The checkpoint-link column is left out. The superscript is the training radius in /255."
    ),
)

SIMCLIP_README = QuotedTable(
    key="simclip-readme",
    title="Sim-CLIP README: ViT-L/14 encoders in OpenFlamingo and LLaVA 1.5, clean and at 4/255",
    source=f"https://github.com/speedlab-git/SimCLIP/blob/{_SIMCLIP_COMMIT}/README.md",
    attack=(
        "The README states only the radius, eps = 4/255, for the adversarial columns (no norm, attack, iteration or "
        "sample count beside the tables). Its OpenFlamingo scripts (bash/of_eval_9B_coco.sh, bash/of_eval_9B_okvqa.sh)"
        " run a single untargeted APGD, 100 steps, eps 4, on 500 (COCO) and 200 (OK-VQA) samples; its LLaVA scripts as"
        " committed use eps 8 (COCO) or no attack (OK-VQA), so the scripts do not settle which attack produced the "
        "table. The paper (arXiv 2407.14971) was not read."
    ),
    columns=(
        "Vision encoder", "VLM",
        "COCO, clean", "Flickr30k, clean", "VizWiz, clean", "OKVQA, clean",
        "COCO, 4/255", "Flickr30k, 4/255", "VizWiz, 4/255", "OKVQA, 4/255",
    ),
    rows=(
        ("Sim-CLIP-2", "Open Flamingo", "85.6", "56.3", "21.8", "35.1", "58.4", "35.1", "13.6", "19.7"),
        ("FARE-2", "Open Flamingo", "84.3", "53.1", "22.1", "34.5", "53.5", "34.3", "12.3", "17.1"),
        ("TECOA-2", "Open Flamingo", "74.5", "48.2", "22.3", "33.6", "40.3", "27.4", "10.6", "15.3"),
        ("Sim-CLIP-4", "Open Flamingo", "81.6", "54.5", "20.0", "32.0", "60.5", "39.2", "15.7", "22.0"),
        ("FARE-4", "Open Flamingo", "81.4", "51.8", "16.4", "31.8", "56.1", "37.6", "13.7", "19.2"),
        ("TECOA-4", "Open Flamingo", "71.0", "45.6", "19.3", "31.0", "50.3", "32.9", "14.7", "20.5"),
        ("CLIP", "Open Flamingo", "60.5", "41.7", "18.0", "28.2", "5.6", "3.8", "1.8", "0"),
        ("Sim-CLIP-2", "LLaVA 1.5", "109.1", "66.3", "45.8", "54.5", "69.4", "42.3", "33.4", "33.9"),
        ("FARE-2", "LLaVA 1.5", "108.1", "65.1", "43.8", "54.1", "68.3", "41.6", "30.1", "31.8"),
        ("TECOA-2", "LLaVA 1.5", "85.3", "60.3", "41.6", "55.3", "61.1", "36.1", "25.3", "24.1"),
        ("Sim-CLIP-4", "LLaVA 1.5", "103.6", "65.0", "41.3", "54.6", "72.9", "46.3", "35.2", "36.2"),
        ("FARE-4", "LLaVA 1.5", "105.1", "64.0", "41.7", "54.5", "71.7", "43.6", "33.7", "34.0"),
        ("TECOA-4", "LLaVA 1.5", "79.1", "57.7", "39.4", "50.0", "65.5", "39.4", "28.4", "27.2"),
        ("CLIP", "LLaVA 1.5", "75.2", "50.3", "37.5", "48.1", "13.5", "10.0", "3.2", "0.0"),
    ),
    note=(
        "The README prints a clean and a 4/255 table with the same rows; they are joined side by side, and the VLM "
        "cell, merged over seven rows there, is repeated on each row. Per the README, COCO and Flickr30k are CIDEr and"
        " VizWiz and OKVQA are accuracy. The suffix is the training radius in /255. The README's clean CLIP rows score"
        " below most robust rows (OpenFlamingo COCO 60.5 here; the RobustVLM README's clean OpenAI row has 79.7); they"
        " are quoted as printed, and the source does not explain it. The OpenFlamingo CLIP OKVQA cell at 4/255 is "
        "printed as '0', its LLaVA counterpart as '0.0'."
    ),
)

TGA_ZSR_README = QuotedTable(
    key="tga-zsr-readme",
    title="TGA-ZSR README: zero-shot adversarial robustness benchmark, robust and clean accuracy",
    source=f"https://github.com/zhyblue424/TGA-ZSR/blob/{_TGA_ZSR_COMMIT}/README.md",
    attack=(
        "Not named beside the table. The repository's evaluation defaults (TGA-ZSR.py) are an untargeted l-inf PGD "
        "with 100 steps, eps 1/255 and step size 1/255 on CLIP ViT-B/32 fine-tuned on TinyImageNet (CW and AutoAttack "
        "are selectable options); the NeurIPS 2024 paper (arXiv 2410.21802), where the setting is described, was not "
        "read."
    ),
    columns=("Method", "Venue", "Robust", "Clean", "Average"),
    rows=(
        ("CLIP", "ICML 2021", "4.90", "64.42", "34.66"),
        ("FT-Clean", "Initial Entry", "7.05", "54.37", "30.71"),
        ("FT-Adv.", "Initial Entry", "28.83", "43.36", "36.09"),
        ("TeCoA", "ICLR 2023", "28.06", "45.81", "36.93"),
        ("PMG-AFT", "CVPR 2024", "32.51", "46.60", "39.55"),
        ("FARE", "ICML 2024", "18.25", "59.85", "39.05"),
        ("Vision-based", "Initial Entry", "29.47", "45.02", "37.24"),
        ("TGA-ZSR (Ours)", "NeurIPS 2024", "42.09", "56.44", "49.27"),
        ("Comp-TGA (Ours)", "TPAMI 2026", "44.46", "55.44", "49.95"),
    ),
    note=(
        "Accuracies as printed (no unit given). 'Average' is the mean of the robust and clean columns. The README says"
        " its methods are evaluated across 16 datasets but does not say beside the table which datasets are averaged. "
        "Its setting (by the code defaults ViT-B/32, TinyImageNet, 1/255) is not the RobustVLM one, so its FARE and "
        "TeCoA rows are not comparable with the RobustVLM tables. 'Ours' refers to the TGA-ZSR authors; the README's "
        "bold markers are dropped."
    ),
)

QUOTED_TABLES: tuple[QuotedTable, ...] = (
    ROBUSTVLM_VITL14,
    ROBUSTVLM_BASE,
    SIMCLIP_README,
    TGA_ZSR_README,
)

__all__ = ["QUOTED_TABLES", "READ_ON", "QuotedTable"]
