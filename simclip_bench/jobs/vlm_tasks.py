"""What one ``simclip eval --task captioning|vqa|pope|scienceqa`` evaluates: its datasets, the task object
that prompts and scores them, the task-specific part of every row's setting, and OpenFlamingo's
demonstrations.

* **Datasets.** ``shapes`` (default) is generated: captioning and VQA as before, POPE as three datasets
  ``shapes-random``, ``shapes-popular``, ``shapes-adversarial``, ScienceQA as ``shapes``
  (:mod:`simclip_bench.data.vlm_standins`). From files: ``coco``, ``flickr30k`` (captioning), ``vqav2``,
  ``okvqa``, ``textvqa``, ``vizwiz`` (VQA), ``pope`` (its three splits, each a dataset ``pope-<split>``),
  ``scienceqa``. A subset is ``--n-samples`` per dataset (POPE: per split), seeded, the same for every model.
* **Setting.** What decides a row's value beyond model, data and attack goes into its ``attack_config`` and
  so its ``setting``: the VQA metric variant, the ScienceQA prompt style, the captioning subset (CIDEr's
  document frequencies), and for OpenFlamingo the number of shots and its prompts. A POPE split is a dataset
  of its own (name and ``data_id``), so its three splits share one setting and average on the leaderboard.
* **Demonstrations** (OpenFlamingo, RobustVLM ``run_evaluation.py``): a query set of up to 2 048 training
  samples drawn with the sample seed, and for evaluated sample i its own seeded draw of k of them (k =
  ``--shots``, or 2 text-only ones zero-shot): captions (the first of each image) or question and first
  answer.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simclip_bench.data.shapes import ShapesDataset
from simclip_bench.data.vlm_benchmarks import POPE_SPLITS, pope_dataset, scienceqa_dataset
from simclip_bench.data.vlm_files import CAPTION_DATASETS, VQA_DATASETS, caption_dataset, vqa_dataset
from simclip_bench.data.vlm_samples import VLMDataset, load_image, shapes_captioning, shapes_vqa
from simclip_bench.data.vlm_standins import shapes_pope, shapes_scienceqa
from simclip_bench.errors import UserError, did_you_mean
from simclip_bench.results.identity import subset_id
from simclip_bench.tasks.captioning import CaptioningTask
from simclip_bench.tasks.pope import PopeTask
from simclip_bench.tasks.scienceqa import ScienceQATask
from simclip_bench.tasks.vqa import VQATask
from simclip_bench.vlm.llava_prompt import SCIENCEQA_STYLES
from simclip_bench.vlm.load import OPENFLAMINGO

VLM_TASKS: tuple[str, ...] = ("captioning", "vqa", "pope", "scienceqa")
FILE_DATASETS: dict[str, tuple[str, ...]] = {"captioning": tuple(CAPTION_DATASETS), "vqa": tuple(VQA_DATASETS),
                                             "pope": ("pope",), "scienceqa": ("scienceqa",)}
DEFAULT_N_SAMPLES = {"shapes": 200, "files": 500}
QUERY_SET_SIZE = 2048  # run_evaluation.py --query_set_size


def known_datasets(task: str) -> tuple[str, ...]:
    return ("shapes", *FILE_DATASETS[task])


def check_task_options(task: str, vlm_spec: str, scienceqa_prompt: str, shots: int) -> None:
    """The options only some tasks or VLMs take."""
    if scienceqa_prompt not in SCIENCEQA_STYLES:
        styles = ", ".join(SCIENCEQA_STYLES)
        raise UserError(f"unknown --scienceqa-prompt {scienceqa_prompt!r}"
                        f"{did_you_mean(scienceqa_prompt, SCIENCEQA_STYLES)}; choose one of {styles}")
    if shots < 0 or (shots and not vlm_spec.startswith(OPENFLAMINGO)):
        raise UserError(f"--shots {shots}: a count of demonstrations >= 0, for --vlm openflamingo:... only "
                        "(LLaVA and the tiny VLM run zero-shot, as RobustVLM does)")
    if vlm_spec.startswith(OPENFLAMINGO) and task not in ("captioning", "vqa"):
        raise UserError(f"--task {task} runs with LLaVA or the tiny VLM (RobustVLM evaluates it with LLaVA); "
                        "OpenFlamingo takes captioning and vqa")


def load_datasets(task: str, dataset: str, dataset_root: str, n_samples: int | None,
                  sample_seed: int) -> list[VLMDataset]:
    """The evaluated subsets: fixed per (dataset, n, sample seed), the same for every encoder."""
    if dataset == "shapes":
        n = n_samples or DEFAULT_N_SAMPLES["shapes"]
        if task == "pope":
            return [shapes_pope(n, split) for split in POPE_SPLITS]
        return [{"captioning": shapes_captioning, "vqa": shapes_vqa, "scienceqa": shapes_scienceqa}[task](n)]
    root = Path(dataset_root.replace("{dataset}", dataset)).expanduser()
    if task == "pope":
        full = [pope_dataset(root, split) for split in POPE_SPLITS]
    elif task == "scienceqa":
        full = [scienceqa_dataset(root)]
    else:
        full = [(caption_dataset if task == "captioning" else vqa_dataset)(dataset, root)]
    return [d.subset(n_samples if n_samples is not None else min(DEFAULT_N_SAMPLES["files"], len(d)), sample_seed)
            for d in full]


def make_task(task: str, dataset: VLMDataset, vqa_metric: str, scienceqa_prompt: str):
    if task == "captioning":
        return CaptioningTask(dataset)
    if task == "vqa":
        return VQATask(dataset, metric_variant=vqa_metric)
    if task == "pope":
        return PopeTask(dataset)
    return ScienceQATask(dataset, style=scienceqa_prompt)


def task_setting(task: str, dataset: VLMDataset, vlm_spec: str, vqa_metric: str, scienceqa_prompt: str,
                 shots: int, prompts: Sequence[str] = ()) -> dict:
    """The task-specific fields of every row's ``attack_config`` (and so its ``setting``), clean rows too.

    Captioning names its evaluated subset: CIDEr-D's document frequencies come from the whole subset, so a
    per-sample score is only the same measurement on the same subset. OpenFlamingo names its ``prompts``
    (a hash): their demonstrations come from the training split, which the evaluated data's identity does
    not cover."""
    setting: dict = {}
    if task == "captioning":
        setting["cider_subset"] = subset_id([s.sample_id for s in dataset.samples])
    if task == "vqa":
        setting["vqa_metric"] = vqa_metric
    if task == "scienceqa":
        setting["scienceqa_prompt"] = scienceqa_prompt
    if vlm_spec.startswith(OPENFLAMINGO):
        setting["shots"] = shots
        setting["prompts"] = hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]
    return setting


def demonstrations(task: str, dataset: VLMDataset, dataset_root: str, k: int, with_images: bool, image_size: int,
                   seed: int) -> list[list[tuple]]:
    """Per evaluated sample, ``k`` demonstrations from the training split: (caption, image) or (question,
    answer, image); the image a (3, S, S) tensor when ``with_images``, else None."""
    if dataset.name == "shapes":
        generated = ShapesDataset("train")
        size = len(generated)

        def demo(p: int) -> tuple:
            s = generated.sample(p)
            text = (s.captions[0],) if task == "captioning" else s.qa[p % len(s.qa)]
            return (*text, s.image)
    else:
        root = Path(dataset_root.replace("{dataset}", dataset.name)).expanduser()
        pool = (caption_dataset if task == "captioning" else vqa_dataset)(dataset.name, root, split="train").samples
        size = len(pool)

        def demo(p: int) -> tuple:
            s = pool[p]
            return (*((s.references[0],) if task == "captioning" else (s.question or "", s.references[0])), s.image)

    query = np.random.default_rng(seed).choice(size, size=min(QUERY_SET_SIZE, size), replace=False)
    out = []
    for i in range(len(dataset)):
        picks = np.random.default_rng([seed, i]).choice(query, size=k, replace=False).tolist()
        out.append([(*d[:-1], load_image(d[-1], image_size) if with_images else None) for d in map(demo, picks)])
    return out


def build_prompts(task, vlm, dataset: VLMDataset, dataset_root: str, shots: int, seed: int) -> list[str]:
    """The task's prompts; OpenFlamingo's are built around demonstrations of the training split."""
    per_prompt = getattr(vlm, "demonstrations_per_prompt", 0)
    if not per_prompt:
        return task.prompts(vlm)
    demos = demonstrations(task.name, dataset, dataset_root, per_prompt, shots > 0, vlm.image_size, seed)
    if task.name == "captioning":
        return [vlm.caption_prompt(dataset.name, demos=d) for d in demos]
    return [vlm.vqa_prompt(s.question or "", dataset.name, demos=d)
            for s, d in zip(dataset.samples, demos, strict=True)]
