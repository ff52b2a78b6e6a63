"""Batch sizes that adapt to memory: an out-of-memory error halves the batch, and nothing in the results changes.

The error is injected on the CPU: a wrapper raises ``torch.OutOfMemoryError`` (what CUDA raises) whenever a forward
pass gets more images than a limit, so a run starting at 32 runs out at 32, 16 and 8 and finishes at 4.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from simclip_bench.errors import UserError
from simclip_bench.memory.adaptive_batch import AUTO, AdaptiveBatch, is_out_of_memory, parse_batch_size

OUTCOME_COLUMNS = ["model", "dataset", "sample_id", "attack", "setting", "eps_text", "label", "clean_pred",
                   "clean_correct", "adv_pred", "adv_correct", "fooled_by", "grad_evals"]


def oom():
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


# ------------------------------------------------------------------------------------------------ the loop


def test_a_batch_that_runs_out_of_memory_runs_again_at_half_the_size():
    tried = []

    def attempt(size):
        tried.append(size)
        if size > 5:
            raise oom()
        return size

    batch = AdaptiveBatch(32, "test batch")
    assert batch.run(attempt) == 4 and tried == [32, 16, 8, 4]
    assert batch.size == 4 and batch.halved_from == [32, 16, 8]
    assert batch.run(attempt) == 4 and tried[-1] == 4  # the smaller size is kept


def test_map_chunks_covers_every_item_once_in_order_across_a_halving():
    seen = []

    def attempt(part):
        if part.stop - part.start > 3:
            raise oom()
        seen.extend(range(part.start, part.stop))
        return list(range(part.start, part.stop))

    batch = AdaptiveBatch(8)
    assert [i for chunk in batch.map_chunks(11, attempt) for i in chunk] == list(range(11))
    assert seen == list(range(11)) and batch.size == 2


def test_out_of_memory_at_batch_size_one_is_one_line():
    with pytest.raises(UserError, match="out of memory even at test batch size 1") as e:
        AdaptiveBatch(4, "test batch").run(lambda size: (_ for _ in ()).throw(oom()))
    assert "\n" not in str(e.value)


def test_a_batch_that_decides_the_result_is_never_split():
    with pytest.raises(UserError, match="lower --batch-size"):
        AdaptiveBatch(8, fixed="lower --batch-size").run(lambda size: (_ for _ in ()).throw(oom()))


def test_other_errors_pass_through_untouched():
    with pytest.raises(ValueError):
        AdaptiveBatch(8).run(lambda size: (_ for _ in ()).throw(ValueError("a bug")))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("value, parsed", [("auto", AUTO), ("AUTO", AUTO), ("64", 64), (7, 7)])
def test_batch_size_is_a_positive_number_or_auto(value, parsed):
    assert parse_batch_size(value) == parsed


@pytest.mark.parametrize("value", ["0", "-3", "lots", "4.5", "", "1e3"])
def test_other_batch_sizes_are_refused(value):
    with pytest.raises(UserError, match="positive whole number or auto"):
        parse_batch_size(value)


# ------------------------------------------------------------------------------------------------ zero-shot


class LimitedHead(nn.Module):
    """A zero-shot head whose forward pass runs out of memory above ``limit`` images (the injected error)."""

    limit = 10**9
    hits: list[int] = []

    def __init__(self, encoder, weights, *args, **kwargs):
        super().__init__()
        from simclip_bench.tasks.zeroshot_head import ZeroShotClassifier

        self.inner = ZeroShotClassifier(encoder, weights, *args, **kwargs)

    def forward(self, images):
        if len(images) > LimitedHead.limit:
            LimitedHead.hits.append(len(images))
            raise oom()
        return self.inner(images)


def _eval(tmp_path, name, monkeypatch, limit, batch_size=32, attack="apgd-ce+apgd-t"):
    from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
    from simclip_bench.tasks import zeroshot

    monkeypatch.setattr(zeroshot, "ZeroShotClassifier", LimitedHead)
    LimitedHead.limit, LimitedHead.hits = limit, []
    out = tmp_path / name
    request = EvalRequest(models=["tiny-clip"], datasets=["shapes"], attack=attack, eps=["4/255"], n_samples=40,
                          n_iter=5, n_targets=3, batch_size=batch_size, out=out, device="cpu")
    result = run_eval(request)
    return result, pd.read_csv(out / "samples.csv"), pd.read_csv(out / "results.csv"), list(LimitedHead.hits)


@pytest.mark.slow
def test_a_run_that_ran_out_of_memory_stores_the_same_samples_as_one_that_did_not(tmp_path, monkeypatch):
    _, clean_run, clean_results, no_hits = _eval(tmp_path, "fits", monkeypatch, limit=10**9)
    notices = []
    monkeypatch.setattr("simclip_bench.progress.SilentReporter.notify", lambda self, m: notices.append(m))
    _, tight_run, tight_results, hits = _eval(tmp_path, "tight", monkeypatch, limit=5)
    assert not no_hits
    assert {32, 16, 8} <= set(hits), hits  # it really ran out of memory, at several sizes
    key = ["setting", "sample_id"]
    a = clean_run[OUTCOME_COLUMNS].sort_values(key).reset_index(drop=True)
    b = tight_run[OUTCOME_COLUMNS].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert (clean_run.sort_values(key)["max_perturbation"].to_numpy()
            == pytest.approx(tight_run.sort_values(key)["max_perturbation"].to_numpy(), abs=1e-7))
    assert list(clean_results["value"]) == list(tight_results["value"])
    assert list(clean_results["setting"]) == list(tight_results["setting"])  # the key does not change
    attacked = tight_results[tight_results["attack"] != "none"]
    assert '"batch_size": 4' in attacked["attack_config"].iloc[0]  # the batch that worked is recorded
    assert any("going on at 16" in n for n in notices)


def test_a_run_that_does_not_fit_even_one_image_stops_with_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="out of memory even at masking-check batch size 1|out of memory even at "
                                        "zero-shot attack batch size 1"):
        _eval(tmp_path, "none-fits", monkeypatch, limit=0)
    assert not (tmp_path / "none-fits" / "samples.csv").exists()


@pytest.mark.slow
def test_the_reference_backend_is_never_split_and_says_to_lower_the_batch_size(tmp_path, monkeypatch):
    pytest.importorskip("pyautoattack")
    with pytest.raises(UserError, match="lower --batch-size"):
        _eval(tmp_path, "ref", monkeypatch, limit=10, batch_size=32, attack="ref:apgd-ce")
    assert not (tmp_path / "ref" / "samples.csv").exists()


# ------------------------------------------------------------------------------------------------ training


def _train_step(monkeypatch, limit, accum_steps=2):
    """Two steps (global batch 8, 2 micro-batches of 4) with forward passes over ``limit`` images running out of
    memory; returns each step's report and the gradients it applied, the final micro-batch size and the hits."""
    from simclip_bench.train.config import TrainConfig
    from simclip_bench.train.session import TrainSession

    cfg = TrainConfig(steps=2, batch_size=8, accum_steps=accum_steps, train_size=16, probe_size=0, attack_steps=2,
                      warmup_steps=0, lr=1e-3, device="cpu", out=None)
    session = TrainSession(cfg, log=lambda *_: None)
    hits, grads = [], []
    forward, opt_step = session.encoder.forward, session.opt.step

    def limited(x, *args, **kwargs):
        if len(x) > limit:
            hits.append(len(x))
            raise oom()
        return forward(x, *args, **kwargs)

    def recorded_step(*args, **kwargs):
        grads.append([p.grad.detach().clone() for group in session.opt.param_groups for p in group["params"]])
        return opt_step(*args, **kwargs)

    monkeypatch.setattr(session.encoder, "forward", limited)
    monkeypatch.setattr(session.opt, "step", recorded_step)
    reports = [session.step(), session.step()]
    return reports, grads, session.memory.size, hits


@pytest.mark.slow
def test_training_splits_a_micro_batch_that_runs_out_of_memory_into_more_accumulation_steps(monkeypatch):
    reports, grads, size, hits = _train_step(monkeypatch, limit=10**9)
    reports_tight, grads_tight, size_tight, hits_tight = _train_step(monkeypatch, limit=1)
    reports_accum, grads_accum, _, _ = _train_step(monkeypatch, limit=10**9, accum_steps=8)
    assert not hits and size == 4
    assert sorted(set(hits_tight)) == [2, 4] and size_tight == 1  # micro-batches of 4 ran out at 4 and at 2
    # exactly the steps of a run configured with 4x the accumulation steps (micro-batches of 1) ...
    for step, step_tight in zip(grads_accum, grads_tight, strict=True):
        assert all(torch.equal(g, g_tight) for g, g_tight in zip(step, step_tight, strict=True))
    assert reports_accum == reports_tight
    # ... which are the unsplit run's up to float rounding (sign steps of the inner PGD and Adam amplify it)
    for step, step_tight in zip(grads, grads_tight, strict=True):
        diff = sum(float((g - t).norm() ** 2) for g, t in zip(step, step_tight, strict=True)) ** 0.5
        assert diff <= 1e-2 * sum(float(g.norm() ** 2) for g in step) ** 0.5
    for a, b in zip(reports, reports_tight, strict=True):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4) for k in a)


# ------------------------------------------------------------------------------------------------ VLM and galleries


def _vlm_eval(tmp_path, name, monkeypatch, limit):
    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.jobs import vlm_eval

    load, hits = vlm_eval.load_vlm, []

    def limited_load(*args, **kwargs):
        loaded = load(*args, **kwargs)
        vlm = loaded.vlm
        generate, target_scores = vlm.generate, vlm.target_scores

        def limited(method):
            def call(images, *rest, **kw):
                if len(images) > limit:
                    hits.append(len(images))
                    raise oom()
                return method(images, *rest, **kw)
            return call

        vlm.generate, vlm.target_scores = limited(generate), limited(target_scores)
        return loaded

    monkeypatch.setattr(vlm_eval, "load_vlm", limited_load)
    out = tmp_path / name
    request = vlm_eval.VLMEvalRequest(task="captioning", models=["tiny-clip"], eps=[parse_eps("4/255")], n_samples=6,
                                      n_iter=3, batch_size=4, out=out, device="cpu")
    vlm_eval.run_vlm_eval(request)
    return pd.read_csv(out / "vlm_samples.csv"), pd.read_csv(out / "results.csv"), hits


@pytest.mark.slow
def test_a_vlm_run_that_ran_out_of_memory_stores_the_same_texts_and_scores(tmp_path, monkeypatch):
    fits, fits_results, no_hits = _vlm_eval(tmp_path, "fits", monkeypatch, limit=10**9)
    tight, tight_results, hits = _vlm_eval(tmp_path, "tight", monkeypatch, limit=1)
    assert not no_hits and {4, 2} <= set(hits)
    columns = ["sample_id", "setting", "clean_text", "clean_score", "adv_text", "adv_score", "fooled_by", "grad_evals"]
    a = fits[columns].sort_values(["setting", "sample_id"]).reset_index(drop=True)
    b = tight[columns].sort_values(["setting", "sample_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert list(fits_results["value"]) == list(tight_results["value"])
    assert all('"batch_size": 1' in c for c in tight_results["attack_config"])


@pytest.mark.slow
def test_the_attack_gallery_halves_its_batch_and_saves_the_same_pictures(tmp_path, monkeypatch):
    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.jobs import attack_gallery

    def run(name, limit):
        monkeypatch.setattr(attack_gallery, "ZeroShotClassifier", LimitedHead)
        LimitedHead.limit, LimitedHead.hits = limit, []
        request = attack_gallery.AttackRequest(n_images=6, eps=parse_eps("4/255"), n_iter=5, out=tmp_path / name,
                                               device="cpu")
        items = attack_gallery.run_attack_gallery(request)
        return [(i.clean_label, i.adv_label, round(i.adv_prob, 5), i.adv_path.read_bytes()) for i in items]

    assert run("fits", 10**9) == run("tight", 2)
    assert {6, 3} <= set(LimitedHead.hits)  # 6 images: forward passes of 6, then 3, then 1
