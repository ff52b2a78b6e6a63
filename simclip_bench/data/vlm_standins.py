"""Generated stand-ins for POPE and ScienceQA-IMG, from the shapes test split, in memory or as files in the
official layouts (for tests, and to run the file readers end to end without the real data).

* **POPE** (``shapes-<split>``): question k asks test image k // 2 "is there a {shape} in the image?",
  about its own shape when k is even (label ``yes``) and about an absent shape when k is odd (``no``), so the
  answers are balanced as in POPE. The absent shape follows POPE's three ways of sampling negatives, with
  the one-object images of the generator: ``random``, uniformly among the other shapes (seeded per image);
  ``popular``, the most frequent other shape among the evaluated images (ties in the generator's order);
  ``adversarial``, the shape most easily confused with the true one (circle-ring, square-diamond,
  star-cross, triangle-crescent), standing in for POPE's most co-occurring object.
* **ScienceQA** (``shapes``): question k asks test image k "what shape is in the image?" with 2 + k mod 4
  options (its shape and others, in a seeded order), written in LLaVA's ``CQM-A`` form ("Context: N/A",
  "Question: ...", "Options: (A) ... (B) ...").

The wording is the generator's own, so the tiny VLM, which learnt these questions, can answer them.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from simclip_bench.data.shapes import SHAPES, ShapesDataset
from simclip_bench.data.vlm_samples import VLMDataset, VLMSample, _check_n
from simclip_bench.multiple_choice import OPTION_LETTERS as OPTIONS

CONFUSABLE: dict[str, str] = {"circle": "ring", "ring": "circle", "square": "diamond", "diamond": "square",
                              "star": "cross", "cross": "star", "triangle": "crescent", "crescent": "triangle"}
POPE_QUESTION = "is there a {} in the image?"
SQA_QUESTION = "what shape is in the image?"


def _absent(split: str, shape: str, image: int, popularity: list[str], seed: int) -> str:
    if split == "adversarial":
        return CONFUSABLE[shape]
    if split == "popular":
        return next(s for s in popularity if s != shape)
    others = [s for s in SHAPES if s != shape]
    return others[int(np.random.default_rng([seed, 7, image]).integers(len(others)))]


def shapes_pope(n: int, split: str, seed: int = 0) -> VLMDataset:
    """``n`` generated POPE questions of ``split`` (module docstring)."""
    data = ShapesDataset("test", seed=seed)
    n_images = (n + 1) // 2
    _check_n(n_images, len(data))
    shapes = [data.sample(i).shape for i in range(n_images)]
    counts = Counter(shapes)
    popularity = sorted(SHAPES, key=lambda s: (-counts[s], SHAPES.index(s)))
    samples = []
    for k in range(n):
        i = k // 2
        asked = shapes[i] if k % 2 == 0 else _absent(split, shapes[i], i, popularity, seed)
        samples.append(VLMSample(f"shapes-{split}/{k}", data.sample(i).image, ("yes" if k % 2 == 0 else "no",),
                                 POPE_QUESTION.format(asked)))
    return VLMDataset(f"shapes-{split}", split, "pope", samples, 0.0,
                      source=f"generated:shapes-pope/{split} (seed {seed})")


def _sqa_text(question: str, choices: tuple[str, ...]) -> str:
    options = " ".join(f"({OPTIONS[j]}) {c}" for j, c in enumerate(choices))
    return f"Context: N/A\nQuestion: {question}\nOptions: {options}"


def shapes_scienceqa(n: int, seed: int = 0) -> VLMDataset:
    """``n`` generated multiple-choice questions (module docstring)."""
    data = ShapesDataset("test", seed=seed)
    _check_n(n, len(data))
    samples = []
    for k in range(n):
        shape = data.sample(k).shape
        rng = np.random.default_rng([seed, 11, k])
        others = [s for s in SHAPES if s != shape]
        picked = [others[j] for j in rng.permutation(len(others))[:1 + k % 4]] + [shape]
        choices = tuple(picked[j] for j in rng.permutation(len(picked)))
        samples.append(VLMSample(f"shapes/sqa{k}", data.sample(k).image, (OPTIONS[choices.index(shape)],),
                                 _sqa_text(SQA_QUESTION, choices), choices))
    return VLMDataset("shapes", "test", "scienceqa", samples, 0.0,
                      source=f"generated:shapes-scienceqa/test (seed {seed})")


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_pope_files(root: Path, n: int, seed: int = 0) -> Path:
    """The generated POPE questions (``n`` per split) as POPE's files: ``coco/coco_pope_<split>.json`` and
    ``val2014/COCO_val2014_<id>.jpg`` (JPEG, quality 95, like COCO's)."""
    root = Path(root)
    for split in ("random", "popular", "adversarial"):
        lines = []
        for k, s in enumerate(shapes_pope(n, split, seed).samples):
            image = f"COCO_val2014_{k // 2:012d}.jpg"
            if not (root / "val2014" / image).is_file():
                (root / "val2014").mkdir(parents=True, exist_ok=True)
                Image.fromarray(s.image).save(root / "val2014" / image, quality=95)
            lines.append(json.dumps({"question_id": k + 1, "image": image, "text": s.question,
                                     "label": s.references[0]}))
        (root / "coco").mkdir(parents=True, exist_ok=True)
        (root / "coco" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    return root


def write_scienceqa_files(root: Path, n: int, seed: int = 0) -> Path:
    """The generated questions as LLaVA's and ScienceQA's files: ``llava_test_CQM-A.json`` (every second
    question also as a text-only twin without image, which the reader must skip), ``problems.json``,
    ``pid_splits.json`` and ``images/test/<id>/image.png``."""
    root = Path(root)
    questions, problems = [], {}
    for k, s in enumerate(shapes_scienceqa(n, seed).samples):
        pid = str(1000 + k)
        _save(s.image, root / "images" / "test" / pid / "image.png")
        questions.append({"id": pid, "image": f"{pid}/image.png",
                          "conversations": [{"from": "human", "value": f"{s.question}\n<image>"},
                                            {"from": "gpt", "value": f"The answer is {s.references[0]}."}]})
        problems[pid] = {"choices": list(s.choices), "answer": OPTIONS.index(s.references[0]), "image": "image.png",
                         "split": "test"}
        if k % 2:
            twin = str(5000 + k)
            questions.append({"id": twin, "conversations": [{"from": "human", "value": s.question}]})
            problems[twin] = {**problems[pid], "image": None}
    (root / "llava_test_CQM-A.json").write_text(json.dumps(questions, indent=1))
    (root / "problems.json").write_text(json.dumps(problems, indent=1))
    (root / "pid_splits.json").write_text(json.dumps({"test": sorted(problems)}))
    return root
