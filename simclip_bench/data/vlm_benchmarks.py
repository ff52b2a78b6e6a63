"""POPE and ScienceQA-IMG from the files users download (nothing is downloaded here).

Each lives in one folder (``--dataset-root``, default ``datasets/{dataset}``):

* ``pope``: POPE's COCO label files ``coco/coco_pope_{random,popular,adversarial}.json`` (or the same names
  in the folder itself), as LLaVA's ``docs/Evaluation.md`` has users download them from POPE's repository:
  JSON lines ``{"question_id", "image", "text", "label"}``, ``label`` ``yes`` or ``no``; images in
  ``val2014/`` (or ``images/``, or the folder). One dataset per split, named ``pope-<split>``. LLaVA's
  ``llava_pope_test.jsonl`` holds the same questions with LLaVA's short-answer sentence appended, which the
  LLaVA adapter appends itself, so it is not needed.
* ``scienceqa``: LLaVA's question file ``llava_test_CQM-A.json`` (a list of ``{"id", "image"?,
  "conversations": [{"from": "human", "value"}, ...]}``), ScienceQA's ``problems.json`` (``{id: {"choices",
  "answer"}}``, the answer an index into the choices) and, if present, ``pid_splits.json`` (only its
  ``test`` ids are kept); images in ``images/test/`` (or ``test/``, ``images/``), as ``<id>/image.png``
  named by the question file. Only questions with an image are read (ScienceQA-IMG); the question text is
  the human turn with ``<image>`` removed and stripped (``model_vqa_science.py``).

Every dataset records its resolved folder (``source``) and a ``fingerprint``: sha256 of the annotation
files' bytes and of the listing (relative path and size) of the images its samples name.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from simclip_bench.data.manifest_paths import ManifestFolder
from simclip_bench.data.vlm_files import _first, _is
from simclip_bench.data.vlm_samples import VLMDataset, VLMSample
from simclip_bench.errors import UserError
from simclip_bench.multiple_choice import OPTION_LETTERS as OPTIONS

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")  # eval_pope.py: coco_pope_<category>.json
POPE_LABELS = ("yes", "no")
SCIENCEQA_QUESTIONS = ("llava_test_CQM-A.json",)


def fingerprint(files: Sequence[Path], images: Sequence[Path], root: Path) -> str:
    """sha256 of each annotation file's name and bytes, then each image's path relative to ``root`` and size
    (-1 when missing; loading it reports it)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\n".encode())
        h.update(f.read_bytes())
    for image in sorted({str(p) for p in images}):
        try:
            size = os.path.getsize(image)
        except OSError:
            size = -1
        h.update(f"{os.path.relpath(image, root)}|{size}\n".encode())
    return h.hexdigest()


def _folder(name: str, root: Path) -> Path:
    root = Path(root).expanduser()
    if not _is(root, directory=True):
        raise UserError(f"{name}: dataset folder {root} does not exist; pass --dataset-root")
    return root


def _json_lines(path: Path, dataset: str) -> list[dict]:
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"{dataset}: {path} is not readable text ({e.__class__.__name__})") from None
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            raise UserError(f"{dataset}: {path} line {k} is not JSON; POPE files have one JSON object a line") from None
        if not isinstance(entry, dict):
            raise UserError(f"{dataset}: {path} line {k} is {type(entry).__name__}, expected an object")
        out.append(entry)
    return out


def _text(entry: dict, key: str, path: Path, where: str, dataset: str) -> str:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{dataset}: {path} {where} has no {key!r} (text); is it the right file?")
    return str(value)


def pope_dataset(root: Path, split: str) -> VLMDataset:
    """POPE's COCO ``split`` (random, popular or adversarial) from ``root`` (layout in the module docstring)."""
    name = f"pope-{split}"
    if split not in POPE_SPLITS:
        raise UserError(f"unknown POPE split {split!r}; choose one of {', '.join(POPE_SPLITS)}")
    root = _folder("pope", root)
    labels = _first(root, (f"coco/coco_pope_{split}.json", f"coco_pope_{split}.json"), "POPE label file", "pope")
    image_dir = ManifestFolder(labels, _first(root, ("val2014", "images", "."), "image folder", "pope",
                                              directory=True))
    samples = []
    for k, entry in enumerate(_json_lines(labels, "pope"), start=1):
        where = f"line {k}"
        label = _text(entry, "label", labels, where, "pope")
        if label not in POPE_LABELS:
            raise UserError(f"pope: {labels} {where}: label {label!r} is neither 'yes' nor 'no'")
        qid = _text(entry, "question_id", labels, where, "pope")
        image = image_dir.path(_text(entry, "image", labels, where, "pope"), where)
        samples.append(VLMSample(f"{name}/{qid}", image, (label,), _text(entry, "text", labels, where, "pope")))
    if not samples:
        raise UserError(f"pope: {labels} has no questions")
    return VLMDataset(name, split, "pope", samples, 0.0, str(root.resolve()),
                      fingerprint([labels], [s.image for s in samples], root))


def _read_json(path: Path, dataset: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{dataset}: {path} is not readable JSON ({e.__class__.__name__})") from None


def _problem(problems: dict, pid: str, path: Path) -> tuple[tuple[str, ...], str]:
    """(choices, right letter) of problem ``pid`` of problems.json."""
    prob = problems.get(pid)
    choices = prob.get("choices") if isinstance(prob, dict) else None
    answer = prob.get("answer") if isinstance(prob, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or not choices:
        raise UserError(f"scienceqa: {path} has no choices for problem {pid!r}; is it ScienceQA's problems.json?")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < min(len(choices), len(OPTIONS)):
        raise UserError(f"scienceqa: {path} problem {pid!r}: answer {answer!r} is not the index of one of its "
                        f"{len(choices)} choices (at most {len(OPTIONS)})")
    return tuple(choices), OPTIONS[answer]


def scienceqa_dataset(root: Path) -> VLMDataset:
    """ScienceQA-IMG's test questions from ``root`` (layout in the module docstring)."""
    root = _folder("scienceqa", root)
    q_path = _first(root, SCIENCEQA_QUESTIONS, "LLaVA question file", "scienceqa")
    p_path = _first(root, ("problems.json",), "ScienceQA problems file", "scienceqa")
    questions, problems = _read_json(q_path, "scienceqa"), _read_json(p_path, "scienceqa")
    if not isinstance(questions, list) or not isinstance(problems, dict):
        raise UserError(f"scienceqa: {q_path} must hold a list and {p_path} an object; are they the right files?")
    files = [q_path, p_path]
    test = None
    if _is(root / "pid_splits.json"):
        splits = _read_json(root / "pid_splits.json", "scienceqa")
        test = set(map(str, splits.get("test", []))) if isinstance(splits, dict) else set()
        files.append(root / "pid_splits.json")
    image_dir = ManifestFolder(q_path, _first(root, ("images/test", "test", "images"), "image folder", "scienceqa",
                                              directory=True))
    samples = []
    for k, q in enumerate(questions):
        where = f"[{k}]"
        if not isinstance(q, dict) or "image" not in q:
            continue  # ScienceQA-IMG: questions with an image only
        pid = _text(q, "id", q_path, where, "scienceqa")
        if test is not None and pid not in test:
            continue
        turns = q.get("conversations")
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict):
            raise UserError(f"scienceqa: {q_path} {where} has no conversations; is it LLaVA's question file?")
        question = _text(turns[0], "value", q_path, f"{where}.conversations[0]", "scienceqa")
        choices, letter = _problem(problems, pid, p_path)
        image = image_dir.path(_text(q, "image", q_path, where, "scienceqa"), where)
        samples.append(VLMSample(f"scienceqa/{pid}", image, (letter,), question.replace("<image>", "").strip(),
                                 choices))
    if not samples:
        raise UserError(f"scienceqa: {q_path} has no test question with an image")
    return VLMDataset("scienceqa", "test", "scienceqa", samples, 0.0, str(root.resolve()),
                      fingerprint(files, [s.image for s in samples], root))
