"""A zero-shot cell's per-sample rows in the store: what a row holds, and which of a cell's are there already.

A row's identity is every column of :data:`~simclip_bench.results.schema.SAMPLE_KEY`: the model (its name,
its vision weights' hash and the hash of its text classifier's inputs), the dataset (its name and
``data_id``, the fingerprint of what was read), the setting and the sample. :func:`cell_samples` selects a
cell by all of them, so a row is reused only for the identical measurement.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simclip_bench.data.classification import ClassificationSource
    from simclip_bench.models.spec import LoadedModel

TASK = "zeroshot"


def cell_samples(samples, loaded: LoadedModel, source: ClassificationSource):
    """The stored per-sample rows of one (model, dataset) cell: every identity column but setting and sample."""
    if samples.empty:
        return samples
    return samples[(samples["model"] == loaded.model_id) & (samples["checkpoint_hash"] == loaded.checkpoint_hash)
                   & (samples["text_hash"] == loaded.text_hash) & (samples["task"] == TASK)
                   & (samples["dataset"] == source.name) & (samples["data_id"] == source.data_id)]


def done_keys(samples, loaded: LoadedModel, source: ClassificationSource) -> set[tuple[str, str]]:
    """(setting, sample_id) pairs already in the store for this model and dataset."""
    mine = cell_samples(samples, loaded, source)
    if mine.empty:
        return set()
    return set(zip(mine["setting"], mine["sample_id"], strict=True))


def sample_rows(run_id, loaded, source, attack, setting, norm, eps, sample_ids, labels, clean_pred, adv_pred,
                norms,
                fooled_by, grad_evals) -> list[dict]:
    """The per-sample rows of one setting, as :data:`~simclip_bench.results.schema.SAMPLE_COLUMNS` names them:
    ``labels`` .. ``grad_evals`` are tensors (or lists) in the order of ``sample_ids``; ``eps`` None is clean."""
    labels, clean_pred, adv_pred, norms = labels.tolist(), clean_pred.tolist(), adv_pred.tolist(), norms.tolist()
    grad_evals = [round(g, 2) for g in grad_evals.tolist()]
    return [{"run_id": run_id, "model": loaded.model_id, "checkpoint_hash": loaded.checkpoint_hash,
             "text_hash": loaded.text_hash, "task": TASK, "dataset": source.name, "data_id": source.data_id,
             "sample_id": sid, "attack": attack, "setting": setting,
             "norm": norm if eps else "", "eps": eps.value if eps else 0.0, "eps_text": eps.text if eps else "0",
             "label": lab, "clean_pred": cp, "clean_correct": cp == lab, "adv_pred": ap,
             "adv_correct": cp == lab and ap == lab, "fooled_by": fb, "max_perturbation": mp, "grad_evals": ge}
            for sid, lab, cp, ap, mp, fb, ge in zip(sample_ids, labels, clean_pred, adv_pred, norms, fooled_by,
                                                    grad_evals, strict=True)]
