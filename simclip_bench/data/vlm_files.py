"""Captioning and VQA datasets from local files (nothing is downloaded).

Each dataset lives in one folder (``--dataset-root``, default ``datasets/{dataset}``):

* ``coco`` (Karpathy test): ``karpathy_coco.json`` or ``dataset_coco.json``; images in ``val2014/``
  (or ``images/``, or the folder itself);
* ``flickr30k`` (Karpathy test): ``dataset_flickr30k.json``, ``karpathy_flickr30k.json`` or
  ``dataset_flickr.json``; images in ``flickr30k-images/`` (or ``images/``, or the folder);
* ``vqav2`` (val): ``v2_OpenEnded_mscoco_val2014_questions.json`` + ``v2_mscoco_val2014_annotations.json``;
  images in ``val2014/``;
* ``okvqa`` (val): ``OpenEnded_mscoco_val2014_questions.json`` + ``mscoco_val2014_annotations.json``; ``val2014/``;
* ``textvqa`` (val): ``val_questions_vqa_format.json`` + ``val_annotations_vqa_format.json``; ``train_images/``;
* ``vizwiz`` (val): ``val_questions_vqa_format.json`` + ``val_annotations_vqa_format.json``; ``val/``.

Every VQA dataset also accepts ``questions.json`` + ``annotations.json`` and an ``images/`` folder.
Caption files are Karpathy's split files (``{"images": [{"filename", "filepath"?, "split", "sentences":
[{"raw"}]}]}``), test split. VQA files are in the VQA format (``{"questions": [{"question_id", "image_id",
"question"}]}`` and ``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``), as the VQA
challenge and OpenFlamingo's ``eval_benchmark`` ship them. A VQA image is found as ``image_id`` itself
(when it is a file name), ``<id>.jpg``, ``COCO_val2014_<id:012d>.jpg`` or ``VizWiz_val_<id:08d>.jpg``.
"""
from __future__ import annotations

import json
from pathlib import Path

from simclip_bench.data.vlm_samples import VLMDataset, VLMSample
from simclip_bench.errors import UserError

CAPTION_DATASETS: dict[str, dict] = {
    "coco": {"json": ("karpathy_coco.json", "dataset_coco.json"), "images": ("val2014", "images", "."),
             "stop_at": 0.10},
    "flickr30k": {"json": ("dataset_flickr30k.json", "karpathy_flickr30k.json", "dataset_flickr.json"),
                  "images": ("flickr30k-images", "images", "."), "stop_at": 0.02},
}
_GENERIC_VQA = (("questions.json",), ("annotations.json",), ("images",))
VQA_DATASETS: dict[str, dict] = {
    "vqav2": {"questions": ("v2_OpenEnded_mscoco_val2014_questions.json",),
              "annotations": ("v2_mscoco_val2014_annotations.json",), "images": ("val2014",)},
    "okvqa": {"questions": ("OpenEnded_mscoco_val2014_questions.json",),
              "annotations": ("mscoco_val2014_annotations.json",), "images": ("val2014",)},
    "textvqa": {"questions": ("val_questions_vqa_format.json",), "annotations": ("val_annotations_vqa_format.json",),
                "images": ("train_images",)},
    "vizwiz": {"questions": ("val_questions_vqa_format.json",), "annotations": ("val_annotations_vqa_format.json",),
               "images": ("val",)},
}


def _first(root: Path, names: tuple[str, ...], what: str, dataset: str, directory: bool = False) -> Path:
    for name in names:
        p = root / name
        if (p.is_dir() if directory else p.is_file()):
            return p
    raise UserError(f"{dataset}: no {what} in {root} (looked for {', '.join(names)}); put the files there "
                    f"or pass --dataset-root (see 'Captioning and VQA' in the README)")


def _read_json(path: Path, key: str, dataset: str):
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{dataset}: {path} is not readable JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"{dataset}: {path} has no {key!r} list; is it the right file?")
    return data[key]


def caption_dataset(name: str, root: Path, split: str = "test") -> VLMDataset:
    """COCO or Flickr30k Karpathy ``split`` from ``root`` (layout in the module docstring)."""
    spec = CAPTION_DATASETS[name]
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --dataset-root")
    path = _first(root, spec["json"], "Karpathy caption file", name)
    image_dir = _first(root, spec["images"], "image folder", name, directory=True)
    samples = []
    for entry in _read_json(path, "images", name):
        if entry.get("split") != split:
            continue
        refs = tuple(s["raw"].strip() for s in entry.get("sentences", []))
        nested = image_dir / entry.get("filepath", "") / entry["filename"]
        image = nested if nested.is_file() else image_dir / entry["filename"]
        samples.append(VLMSample(f"{name}/{entry.get('cocoid', entry.get('imgid', entry['filename']))}", image, refs))
    if not samples:
        raise UserError(f"{name}: {path} has no images of split {split!r}")
    return VLMDataset(name, split, "captioning", samples, spec["stop_at"])


def _vqa_image(image_dir: Path, image_id) -> Path:
    text = str(image_id)
    candidates = [image_dir / text] if Path(text).suffix else []
    candidates.append(image_dir / f"{text}.jpg")
    if text.isdigit():
        candidates += [image_dir / f"COCO_val2014_{int(text):012d}.jpg", image_dir / f"VizWiz_val_{int(text):08d}.jpg"]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]  # reported as missing when the image is loaded


def vqa_dataset(name: str, root: Path, split: str = "val") -> VLMDataset:
    """A VQA-format dataset (VQAv2, OK-VQA, TextVQA, VizWiz) from ``root`` (layout in the module docstring)."""
    spec = VQA_DATASETS[name]
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --dataset-root")
    q_path = _first(root, spec["questions"] + _GENERIC_VQA[0], "questions file", name)
    a_path = _first(root, spec["annotations"] + _GENERIC_VQA[1], "annotations file", name)
    image_dir = _first(root, spec["images"] + _GENERIC_VQA[2], "image folder", name, directory=True)
    answers = {a["question_id"]: tuple(x["answer"] for x in a["answers"])
               for a in _read_json(a_path, "annotations", name)}
    samples = []
    for q in _read_json(q_path, "questions", name):
        refs = answers.get(q["question_id"])
        if not refs:
            continue
        samples.append(VLMSample(f"{name}/{q['question_id']}", _vqa_image(image_dir, q["image_id"]), refs,
                                 q["question"]))
    if not samples:
        raise UserError(f"{name}: no question of {q_path} has answers in {a_path}")
    return VLMDataset(name, split, "vqa", samples, 0.0)
