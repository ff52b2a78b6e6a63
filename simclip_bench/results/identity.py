"""The identity of a stored measurement: what every key of the store is made of, derived in one place.

A per-sample row (``samples.csv``, ``vlm_samples.csv``) is reused, and a table row (``results.csv``) replaced,
only by a row of the identical measurement. Its key covers everything that determined its value:

* **data**: ``dataset`` (the name shown in tables) and ``data_id``, a hash of the dataset's identity: where
  it was read (the resolved folder and, for a CLIP_benchmark name, the builder), a fingerprint of the files
  there (:mod:`simclip_bench.data.fingerprint`), the split, the class names and the templates (for
  captioning/VQA: the annotation files). ``data_source`` shows the resolved source readably. Two folders
  with one name, a folder whose images or ``classnames.txt`` changed, or another ``--dataset-root``, are
  other data;
* **model**: ``model`` (the spec as written), ``checkpoint_hash`` (the vision tower's weights), and what
  reads its features: ``text_hash`` (zero-shot: the text tower that builds the classifier) or ``vlm_hash``
  (captioning/VQA: the VLM's own weights and its prompt, image and generation settings,
  :class:`~simclip_bench.vlm.base.LoadedVLM`);
* **setting**: ``setting``, a hash of the fully resolved attack setting (attack, iterations, restarts,
  targets, search precision, eps, norm, seed; the reference backend's batch size; the VQA metric variant);
  for captioning it also covers the evaluated subset, since CIDEr-D's document frequencies, and so every
  per-sample score, come from the whole subset;
* **subset** (table rows): ``subset_id``, a hash of the evaluated sample ids (the requested fixed subset,
  unreadable images included), with ``n_requested`` and ``sample_seed`` shown readably.

Per-sample rows are reused only for the identical ``data_id``. A table row (``results.csv``) is the latest
answer to one question, keyed by ``data_source`` instead: re-running after the files of a folder changed
(an unreadable image fixed, ``classnames.txt`` edited) recomputes every sample and *replaces* the row,
instead of leaving an ``n=499`` row beside the ``n=500`` one; the row's ``data_id`` says which content it
was measured on.

Every read of the store takes these columns as text (:data:`TEXT_COLUMNS`): a dataset named ``2012`` stays
the string ``2012``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from simclip_bench.data.fingerprint import ID_LENGTH, data_id  # noqa: F401 - the data layer hashes its own identity

SAMPLE_KEY: tuple[str, ...] = ("model", "checkpoint_hash", "text_hash", "task", "dataset", "data_id", "setting",
                               "sample_id")
VLM_SAMPLE_KEY: tuple[str, ...] = ("model", "checkpoint_hash", "vlm_hash", "task", "dataset", "data_id", "setting",
                                   "sample_id")
# A table row answers a question (this model, this data source, this subset and setting): a later row of the same
# question replaces it, also when the source's files changed (its data_id then says which content it measured).
RESULT_KEY: tuple[str, ...] = ("model", "checkpoint_hash", "text_hash", "vlm_hash", "task", "dataset", "data_source",
                               "split", "subset_id", "attack", "setting", "eps_text", "metric")
# Columns a store written before measurement identities lacks: such a store is refused for writing.
IDENTITY_COLUMNS: tuple[str, ...] = ("data_id",)
# Read as text wherever the store is read (keys, names and the other columns that are never numbers).
TEXT_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    SAMPLE_KEY + VLM_SAMPLE_KEY + RESULT_KEY
    + ("run_id", "created_at", "git_sha", "package_version", "data_source", "protocol", "norm", "attack_config",
       "flags", "device", "fooled_by", "prompt", "references", "clean_text", "adv_text")))


def short_hash(payload: object) -> str:
    """The first :data:`ID_LENGTH` hex digits of the sha256 of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]


def subset_id(sample_ids: Sequence[str]) -> str:
    """The ``subset_id`` of an evaluated subset: its sample ids, in order."""
    return short_hash({"subset": list(sample_ids)})


def key_of(row: dict, key: Sequence[str]) -> tuple[str, ...]:
    """A row's key as text, as ``csv`` writes it and the store reads it back: missing and NaN are ''."""
    out = []
    for column in key:
        v = row.get(column)
        if v is None or (isinstance(v, float) and v != v):
            out.append("")
        else:
            out.append(" ".join(v.splitlines()) if isinstance(v, str) else str(v))
    return tuple(out)
