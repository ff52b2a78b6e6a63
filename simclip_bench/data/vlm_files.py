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
OpenFlamingo's demonstrations come from the training split: the Karpathy file's ``train`` images, or the
VQA training files (VQAv2 ``v2_OpenEnded_mscoco_train2014_questions.json`` + ``v2_mscoco_train2014_annotations
.json``, images ``train2014/``; OK-VQA ``OpenEnded_mscoco_train2014_questions.json`` +
``mscoco_train2014_annotations.json``, ``train2014/``; TextVQA and VizWiz ``train_questions_vqa_format.json``
+ ``train_annotations_vqa_format.json``, ``train_images/`` and ``train/``; any: ``train_questions.json`` +
``train_annotations.json`` + ``train_images/``), as RobustVLM's ``bash/of_eval_9B.sh`` names them.
Caption files are Karpathy's split files (``{"images": [{"filename", "filepath"?, "split", "sentences":
[{"raw"}]}]}``), test split. VQA files are in the VQA format (``{"questions": [{"question_id", "image_id",
"question"}]}`` and ``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``), as the VQA
challenge and OpenFlamingo's ``eval_benchmark`` ship them. A VQA image is found as ``image_id`` itself
(when it is a file name), ``<id>.jpg``, ``COCO_val2014_<id:012d>.jpg`` or ``VizWiz_val_<id:08d>.jpg``.

Image names in these files are relative to the image folder and must stay inside it: an entry that
leaves it (``..``, a symbolic link, an absolute path) is refused, naming the file and the entry
(:mod:`simclip_bench.data.manifest_paths`).
"""
from __future__ import annotations

import json
from pathlib import Path, PurePath

from simclip_bench.data.manifest_paths import ManifestFolder
from simclip_bench.data.vlm_samples import VLMDataset, VLMSample
from simclip_bench.errors import UserError

CAPTION_DATASETS: dict[str, dict] = {
    "coco": {"json": ("karpathy_coco.json", "dataset_coco.json"), "images": ("val2014", "images", "."),
             "train_images": ("train2014", "images", "."), "stop_below": 0.10},
    "flickr30k": {"json": ("dataset_flickr30k.json", "karpathy_flickr30k.json", "dataset_flickr.json"),
                  "images": ("flickr30k-images", "images", "."), "train_images": ("flickr30k-images", "images", "."),
                  "stop_below": 0.02},
}
_GENERIC_VQA = {"val": (("questions.json",), ("annotations.json",), ("images",)),
                "train": (("train_questions.json",), ("train_annotations.json",), ("train_images",))}
VQA_DATASETS: dict[str, dict] = {
    "vqav2": {"questions": ("v2_OpenEnded_mscoco_val2014_questions.json",),
              "annotations": ("v2_mscoco_val2014_annotations.json",), "images": ("val2014",),
              "train": (("v2_OpenEnded_mscoco_train2014_questions.json",), ("v2_mscoco_train2014_annotations.json",),
                        ("train2014",))},
    "okvqa": {"questions": ("OpenEnded_mscoco_val2014_questions.json",),
              "annotations": ("mscoco_val2014_annotations.json",), "images": ("val2014",),
              "train": (("OpenEnded_mscoco_train2014_questions.json",), ("mscoco_train2014_annotations.json",),
                        ("train2014",))},
    "textvqa": {"questions": ("val_questions_vqa_format.json",), "annotations": ("val_annotations_vqa_format.json",),
                "images": ("train_images",),
                "train": (("train_questions_vqa_format.json",), ("train_annotations_vqa_format.json",),
                          ("train_images",))},
    "vizwiz": {"questions": ("val_questions_vqa_format.json",), "annotations": ("val_annotations_vqa_format.json",),
               "images": ("val",),
               "train": (("train_questions_vqa_format.json",), ("train_annotations_vqa_format.json",), ("train",))},
}


def _is(path: Path, directory: bool = False) -> bool:
    """``path.is_dir()`` / ``path.is_file()``, False for a name too long for the system to look up."""
    try:
        return path.is_dir() if directory else path.is_file()
    except OSError:
        return False


def _first(root: Path, names: tuple[str, ...], what: str, dataset: str, directory: bool = False) -> Path:
    for name in names:
        p = root / name
        if _is(p, directory):
            return p
    raise UserError(f"{dataset}: no {what} in {root} (looked for {', '.join(names)}); put the files there "
                    f"or pass --dataset-root (see docs/vlm.md, 'Datasets')")


def _read_json(path: Path, key: str, dataset: str):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: not UTF-8, not JSON, a 5000-digit number
        raise UserError(f"{dataset}: {path} is not readable JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"{dataset}: {path} has no {key!r} list; is it the right file?")
    return data[key]


_REQUIRED = object()


class _Entries:
    """Reads the entries of one JSON file of ``dataset`` and checks their shape as it goes, so a file of the
    wrong layout is one line naming the entry (``images[3].filename is int, expected str``), not a KeyError."""

    def __init__(self, path: Path, dataset: str) -> None:
        self.path, self.dataset = path, dataset

    def objects(self, items: object, where: str) -> list[dict]:
        """``items`` when it is a list of JSON objects."""
        if not isinstance(items, list):
            raise UserError(f"{self.dataset}: {self.path} {where} is {type(items).__name__}, expected a list; "
                            "is it the right file?")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise UserError(f"{self.dataset}: {self.path} {where}[{i}] is {type(item).__name__}, expected an "
                                "object; is it the right file?")
        return items

    def read(self, key: str) -> list[dict]:
        """The file's top-level ``key`` list of objects."""
        return self.objects(_read_json(self.path, key, self.dataset), key)

    def field(self, entry: dict, name: str, kinds: type | tuple[type, ...], where: str, default: object = _REQUIRED):
        """``entry[name]``, one of ``kinds`` (never a JSON true/false); ``default`` when missing, if given."""
        if name not in entry and default is not _REQUIRED:
            return default
        if name not in entry:
            raise UserError(f"{self.dataset}: {self.path} {where} has no {name!r}; is it the right file?")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            expected = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
            raise UserError(f"{self.dataset}: {self.path} {where}.{name} is {type(value).__name__}, "
                            f"expected {expected}")
        return value


def _captions(f: _Entries, entry: dict, where: str) -> tuple[str, ...]:
    sentences = f.objects(f.field(entry, "sentences", list, where, default=[]), f"{where}.sentences")
    return tuple(f.field(s, "raw", str, f"{where}.sentences[{j}]").strip() for j, s in enumerate(sentences))


def caption_dataset(name: str, root: Path, split: str = "test") -> VLMDataset:
    """COCO or Flickr30k Karpathy ``split`` from ``root`` (layout in the module docstring); ``train`` (the
    demonstrations) reads COCO's images from ``train2014/``."""
    spec = CAPTION_DATASETS[name]
    root = Path(root)
    if not _is(root, directory=True):
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --dataset-root")
    path = _first(root, spec["json"], "Karpathy caption file", name)
    folders = spec["train_images" if split == "train" else "images"]
    image_dir = ManifestFolder(path, _first(root, folders, "image folder", name, directory=True))
    samples = []
    f = _Entries(path, name)
    for i, entry in enumerate(f.read("images")):
        if entry.get("split") != split:
            continue
        where = f"images[{i}]"
        refs = _captions(f, entry, where)
        filename = f.field(entry, "filename", str, where)
        nested = image_dir.path(PurePath(f.field(entry, "filepath", str, where, default=""), filename), where)
        image = nested if _is(nested) else image_dir.path(filename, where)
        samples.append(VLMSample(f"{name}/{entry.get('cocoid', entry.get('imgid', filename))}", image, refs))
    if not samples:
        raise UserError(f"{name}: {path} has no images of split {split!r}")
    return VLMDataset(name, split, "captioning", samples, spec["stop_below"], *_identity(root, [path], image_dir))


def _vqa_image(image_dir: ManifestFolder, image_id, where: str) -> Path:
    text = str(image_id)
    names = [text] if Path(text).suffix else []
    names.append(f"{text}.jpg")
    if text.isascii() and text.isdigit() and len(text) <= 18:  # int() refuses "²" (a digit) and 4300 digits
        names += [f"COCO_val2014_{int(text):012d}.jpg", f"VizWiz_val_{int(text):08d}.jpg"]
    candidates = [image_dir.path(n, where) for n in names]
    for c in candidates:
        if _is(c):
            return c
    return candidates[0]  # reported as missing when the image is loaded


def _answers(f: _Entries) -> dict[int | str, tuple[str, ...]]:
    """question_id -> the human answers, from a VQA annotations file."""
    answers = {}
    for i, a in enumerate(f.read("annotations")):
        where = f"annotations[{i}]"
        given = f.objects(f.field(a, "answers", list, where), f"{where}.answers")
        answers[f.field(a, "question_id", (int, str), where)] = tuple(
            f.field(x, "answer", str, f"{where}.answers[{j}]") for j, x in enumerate(given))
    return answers


def vqa_dataset(name: str, root: Path, split: str = "val") -> VLMDataset:
    """A VQA-format dataset (VQAv2, OK-VQA, TextVQA, VizWiz) from ``root``: ``split`` ``val`` (evaluated) or
    ``train`` (demonstrations); layout in the module docstring."""
    spec = VQA_DATASETS[name]
    root = Path(root)
    if not _is(root, directory=True):
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --dataset-root")
    questions, annotations, images = (spec["train"] if split == "train"
                                      else (spec["questions"], spec["annotations"], spec["images"]))
    generic = _GENERIC_VQA["train" if split == "train" else "val"]
    q_path = _first(root, questions + generic[0], f"{split} questions file", name)
    a_path = _first(root, annotations + generic[1], f"{split} annotations file", name)
    image_dir = ManifestFolder(q_path, _first(root, images + generic[2], f"{split} image folder", name,
                                              directory=True))
    answers = _answers(_Entries(a_path, name))
    samples = []
    f = _Entries(q_path, name)
    for i, q in enumerate(f.read("questions")):
        where = f"questions[{i}]"
        question_id = f.field(q, "question_id", (int, str), where)
        refs = answers.get(question_id)
        if not refs:
            continue
        image = _vqa_image(image_dir, f.field(q, "image_id", (int, str), where), where)
        samples.append(VLMSample(f"{name}/{question_id}", image, refs, f.field(q, "question", str, where)))
    if not samples:
        raise UserError(f"{name}: no question of {q_path} has answers in {a_path}")
    return VLMDataset(name, split, "vqa", samples, 0.0, *_identity(root, [q_path, a_path], image_dir))


def _identity(root: Path, annotations: list[Path], images: ManifestFolder) -> tuple[str, str]:
    """(source, fingerprint) of a dataset read from files: the resolved folder, and a hash of the annotation
    files' contents and of the image folder's listing (:mod:`simclip_bench.data.fingerprint`)."""
    from simclip_bench.data.fingerprint import files_fingerprint, listing_fingerprint

    image_root = images.folder.resolve()
    return str(Path(root).resolve()), f"{files_fingerprint(annotations)}:{listing_fingerprint(image_root)}"
