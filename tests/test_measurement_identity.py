"""A stored row is reused only for the identical measurement: its key covers everything that determined it.

Each test runs two evaluations into one ``--out`` that differ in exactly one thing, and checks that the
second shares no per-sample row with the first (it computes every sample, and both results stand in the
store): two folders with one name, an edited ``classnames.txt`` or ``templates.txt``, another
``--dataset-root``, another text tower behind the same spec, another VLM behind the same name, another
captioning subset, and the attack setting's fields. The others check what must still be shared: the same
measurement is reused, and a dataset or model named like a number stays text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from simclip_bench.jobs.vlm_eval import VLMEvalRequest, run_vlm_eval
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_rows, read_samples

N = 6


def _folder(root: Path, seed: int, classes=("circle", "square"), per_class: int = 3) -> Path:
    """An ImageFolder of random images, different for each seed."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _eval(out: Path, **kw):
    kw = {"models": ["tiny-clip"], "attack": "none", "n_samples": N, "device": "cpu", **kw}
    return run_eval(EvalRequest(out=out, **kw))


def _results(out: Path) -> pd.DataFrame:
    return read_rows(out, "results.csv")


# --- data ----------------------------------------------------------------------------------------------------

def test_two_folders_with_one_name_are_two_datasets(tmp_path):
    clean, jpeg = _folder(tmp_path / "clean" / "val", 0), _folder(tmp_path / "jpeg" / "val", 1)
    out = tmp_path / "out"
    first = _eval(out, datasets=[str(clean)])
    second = _eval(out, datasets=[str(jpeg)])
    assert first.computed == N and second.computed == N and second.reused == 0
    samples = read_samples(out)
    assert len(samples) == 2 * N and samples["data_id"].nunique() == 2
    assert set(samples["dataset"]) == {"val"}
    results = _results(out)
    assert len(results) == 2 and set(results["data_source"]) == {str(clean.resolve()), str(jpeg.resolve())}


def test_both_folders_in_one_grid_get_their_own_rows_and_summary_columns(tmp_path):
    clean, jpeg = _folder(tmp_path / "clean" / "val", 0), _folder(tmp_path / "jpeg" / "val", 1)
    result = _eval(tmp_path / "out", datasets=[str(clean), str(jpeg)])
    assert result.computed == 2 * N and len(result.rows) == 2
    datasets = [c for c in result.summary.columns if c.startswith("val")]
    assert len(datasets) == 2, "two datasets called val must not share a summary column"


@pytest.mark.parametrize("edit", ["classnames.txt", "templates.txt"])
def test_editing_the_class_names_or_templates_makes_other_data(tmp_path, edit):
    data = _folder(tmp_path / "val", 0)
    out = tmp_path / "out"
    _eval(out, datasets=[str(data)])
    (data / edit).write_text("a circle\na square\n" if edit == "classnames.txt" else "a drawing of a {c}.\n")
    second = _eval(out, datasets=[str(data)])
    assert second.reused == 0 and second.computed == N
    assert read_samples(out)["data_id"].nunique() == 2


def test_another_dataset_root_for_a_named_dataset_is_other_data(tmp_path):
    """``--dataset imagenet-r`` under two roots (CLIP_benchmark's ImageFolder layout, two of its classes)."""
    for root, seed in (("a", 0), ("b", 1)):
        _folder(tmp_path / root / "imagenet-r", seed, classes=("n01443537", "n01484850"))
    out = tmp_path / "out"
    _eval(out, datasets=["imagenet-r"], dataset_root=str(tmp_path / "a" / "{dataset}"))
    second = _eval(out, datasets=["imagenet-r"], dataset_root=str(tmp_path / "b" / "{dataset}"))
    assert second.reused == 0 and read_samples(out)["data_id"].nunique() == 2


def test_the_same_data_is_reused_and_a_numeric_name_stays_text(tmp_path):
    data = _folder(tmp_path / "2012", 0)
    out = tmp_path / "out"
    first = _eval(out, datasets=[str(data)])
    assert not first.pending and (out / "results.csv").is_file(), "a dataset named 2012 must complete"
    again = _eval(out, datasets=[str(data)])
    assert again.computed == 0 and again.reused == N and not again.pending
    assert list(_results(out)["dataset"]) == ["2012"]


def test_fixing_an_unreadable_image_replaces_the_row_instead_of_adding_one(tmp_path):
    data = _folder(tmp_path / "val", 0)
    broken = data / "square" / "0.png"
    good = broken.read_bytes()
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    _eval(out, datasets=[str(data)])
    assert list(_results(out)["n_samples"]) == [str(N - 1)]
    broken.write_bytes(good)
    _eval(out, datasets=[str(data)])
    results = _results(out)
    assert len(results) == 1 and list(results["n_samples"]) == [str(N)] and list(results["n_requested"]) == [str(N)]


# --- model ---------------------------------------------------------------------------------------------------

def test_another_text_tower_behind_the_same_spec_is_another_model(tmp_path, tiny):
    weights = tmp_path / "clip.safetensors"
    state = {k: v.detach().clone().contiguous() for k, v in tiny.model.clip.state_dict().items()}
    save_file(state, str(weights))
    spec = f"simclip-tiny:{weights}"
    out = tmp_path / "out"
    _eval(out, models=[spec])
    state["token_embedding.weight"] += 0.01 * torch.randn_like(state["token_embedding.weight"])
    save_file(state, str(weights))
    second = _eval(out, models=[spec])
    assert second.reused == 0
    samples = read_samples(out)
    assert samples["checkpoint_hash"].nunique() == 1 and samples["text_hash"].nunique() == 2


# --- VLM -----------------------------------------------------------------------------------------------------

def _tiny_vlm_copy(path: Path, perturb: bool) -> Path:
    from simclip_bench.models.checkpoint import read_safetensors_metadata
    from simclip_bench.vlm.tiny import TINY_VLM_WEIGHTS

    path.parent.mkdir(parents=True)
    tensors = load_file(str(TINY_VLM_WEIGHTS))
    if perturb:
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 0.05
    save_file(tensors, str(path), metadata=read_safetensors_metadata(TINY_VLM_WEIGHTS))
    return path


def _vlm_eval(out: Path, **kw):
    kw = {"task": "vqa", "models": ["tiny-clip"], "attack": "none", "n_samples": 4, "device": "cpu", **kw}
    return run_vlm_eval(VLMEvalRequest(out=out, **kw))


def test_two_vlms_with_one_name_are_two_vlms(tmp_path):
    first_vlm = _tiny_vlm_copy(tmp_path / "ft-A" / "final.safetensors", perturb=False)
    second_vlm = _tiny_vlm_copy(tmp_path / "ft-B" / "final.safetensors", perturb=True)
    out = tmp_path / "out"
    first = _vlm_eval(out, vlm=str(first_vlm))
    second = _vlm_eval(out, vlm=str(second_vlm))
    assert first.rows[0]["model"] == second.rows[0]["model"] == "final[tiny-clip]"
    assert len(second.sample_rows) == 4, "the second VLM reused the first one's outputs"
    assert read_rows(out, "vlm_samples.csv")["vlm_hash"].nunique() == 2


def test_captioning_scores_are_not_reused_across_subsets_vqa_accuracy_is(tmp_path):
    out = tmp_path / "out"
    _vlm_eval(out, task="captioning", n_samples=3)
    bigger = _vlm_eval(out, task="captioning", n_samples=5)
    assert len(bigger.sample_rows) == 5, "CIDEr-D depends on the whole subset: no per-sample score is reusable"
    _vlm_eval(out, task="vqa", n_samples=3)
    assert len(_vlm_eval(out, task="vqa", n_samples=5).sample_rows) == 2  # a VQA score is the sample's own
    rows = _results(out)
    assert len(rows[rows["task"] == "captioning"]) == 2 and rows["subset_id"].nunique() == 4


# --- setting -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, first, second", [
    ("n_iter", 2, 3), ("seed", 0, 1), ("eps", ["4/255"], ["2/255"]), ("norm", None, "l2"),
    ("precision", "fp32", "bf16"), ("attack", "apgd-ce", "apgd-dlr"),
])
def test_every_field_of_the_attack_setting_is_part_of_the_key(tmp_path, field, first, second):
    out = tmp_path / "out"
    base = {"attack": "apgd-ce", "n_iter": 2, "n_samples": 4, "eps": ["4/255"] if field != "norm" else ["0.5"]}
    _eval(out, **(base | {field: first}))
    again = _eval(out, **(base | {field: second}))
    attacked = read_samples(out).query("attack != 'none'")
    assert attacked["setting"].nunique() == 2 and len(attacked) == 8, field
    assert again.computed == 4  # the clean pass is shared; the attacked samples are new


# --- what the tables do with several measurements --------------------------------------------------------------

def test_the_leaderboard_never_puts_a_smaller_subset_in_the_larger_ones_column(tmp_path):
    """The README's run (here 12 images, APGD-CE) and a fast run on 5 images into one --out: each subset keeps
    its own clean column with its own number, and the price of robustness pairs clean and robust on the same
    subset."""
    from simclip_bench.leaderboard.load import load_results
    from simclip_bench.leaderboard.table import build_leaderboard

    out = tmp_path / "out"
    full = _eval(out, attack="apgd-ce", n_iter=2, n_samples=12, eps=["4/255"])
    fast = _eval(out, protocol="fast", n_iter=2, n_samples=5, eps=["4/255"], audit_fraction=0.0, attack=None)
    lb = build_leaderboard(load_results(out), {})
    columns = {c.label: c for c in lb.columns_of("zeroshot")}
    assert {"clean n=12", "clean n=5"} <= set(columns), list(columns)
    entry = lb.entries[0]
    clean_full, clean_fast = (next(r["value"] for r in run.rows if r["attack"] == "none") for run in (full, fast))
    assert clean_full != clean_fast, "the two subsets' clean accuracies must differ for this test to mean anything"
    assert entry.cells[columns["clean n=12"]].value == pytest.approx(clean_full)
    assert entry.cells[columns["clean n=5"]].value == pytest.approx(clean_fast)
    assert entry.cells[columns["clean n=12"]].n_samples == 12
    assert lb.worst_case(entry, "zeroshot", 0.0) == pytest.approx(clean_full)
    assert lb.subsets("zeroshot")[0].startswith("12/")


def test_a_rerun_with_other_iterations_gets_its_own_column_not_the_defaults(tmp_path):
    from simclip_bench.leaderboard.load import load_results
    from simclip_bench.leaderboard.table import build_leaderboard

    out = tmp_path / "out"
    _eval(out, attack="apgd-ce", n_iter=3, n_samples=4, eps=["4/255"])
    _eval(out, attack="apgd-ce", n_iter=2, n_samples=4, eps=["4/255"])
    robust = [c.label for c in build_leaderboard(load_results(out), {}).columns_of("zeroshot") if not c.is_clean]
    assert len(robust) == 2 and all("n_iter" in label for label in robust), robust


def test_the_summary_averages_a_two_class_dataset_with_the_others_under_robustvlm(tmp_path):
    two = _folder(tmp_path / "two", 0)
    result = _eval(tmp_path / "out", datasets=["shapes", str(two)], protocol="robustvlm", attack=None, n_iter=1,
                   n_samples=4, eps=["4/255"])
    attacks = {r["dataset"]: r["attack"] for r in result.rows if r["attack"] != "none"}
    assert attacks == {"shapes": "apgd-ce*5+apgd-t", "two": "apgd-ce*5"}
    robust = result.summary[result.summary["eps"] != "0"]
    assert len(robust) == 1, "one protocol, one eps: one average, whatever attack each dataset needed"
    row = robust.iloc[0]
    assert {"shapes", "two"} <= set(robust.columns)
    assert row["average"] == pytest.approx((row["shapes"] + row["two"]) / 2)


def test_a_cell_completed_by_a_shard_that_died_before_writing_its_rows_is_written_by_a_survivor(tmp_path,
                                                                                                monkeypatch):
    """Shard 0/2 works on two cells; while it works on the second, shard 1/2 appends its part of the first and
    is killed before writing the first cell's rows. Shard 0/2 finds that cell complete at the end: it writes it."""
    import simclip_bench.jobs.zeroshot_eval as job
    from simclip_bench.data.subset import fixed_subset
    from simclip_bench.models.spec import load_model
    from simclip_bench.tasks import zeroshot

    out = tmp_path / "out"
    two = _folder(tmp_path / "two", 0)
    real_run_cell = zeroshot.run_cell
    calls = []

    def run_cell(loaded, plan, out_dir, run_id, device, done, **kw):
        calls.append(plan.source.name)
        if len(calls) == 2:  # shard 1/2 finishes the first cell meanwhile, then dies
            first = job.open_source("shapes")
            indices = fixed_subset(len(first), N, 0)
            other = zeroshot.CellPlan(first, indices, plan.spec, plan.eps, part=indices[1::2])
            real_run_cell(load_model("tiny-clip"), other, out_dir, "dead", device, set())
        return real_run_cell(loaded, plan, out_dir, run_id, device, done, **kw)

    monkeypatch.setattr(job, "run_cell", run_cell)
    result = _eval(out, datasets=["shapes", str(two)], shard="0/2")
    assert calls == ["shapes", "two"]
    written = _results(out)
    assert set(written["dataset"]) == {"shapes"}, "the completed cell's rows must reach results.csv"
    assert result.pending == ["tiny-clip / two"]
