"""A ``--model``, ``--dataset`` or ``--eps`` given twice is evaluated once, at its first position.

Eps values are compared as numbers (``4/255`` and ``0.0156862745`` are one eps), datasets and models
written as paths by the folder they name (``runs/a`` and ``./runs/a/``).
"""
from __future__ import annotations

from _shapes_folder import write_shapes_folder

from simclip_bench.attacks.eps import parse_eps, unique_eps
from simclip_bench.grid import unique_values
from simclip_bench.jobs.vlm_eval import VLMEvalRequest, run_vlm_eval
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_results, read_samples
from simclip_bench.tasks.protocols import get_protocol


def _keys(rows) -> list[tuple]:
    return [(r["model"], r["dataset"], r["attack"], r["eps_text"]) for r in rows]


def test_a_repeated_model_dataset_and_eps_give_one_set_of_zero_shot_rows(tmp_path):
    request = EvalRequest(models=["tiny-clip", "tiny-clip"], datasets=["shapes", "shapes"],
                          eps=["4/255", "0.0156862745", "4/255"], n_samples=8, n_iter=2, out=tmp_path, device="cpu")
    result = run_eval(request)
    assert _keys(result.rows) == [("tiny-clip", "shapes", "none", "0"), ("tiny-clip", "shapes", "apgd-ce", "4/255")]
    assert len(read_results(tmp_path)) == 2
    assert len(read_samples(tmp_path)) == 2 * 8  # the clean pass and one eps, 8 samples each, stored once
    assert result.paired.empty  # one model: nothing to pair


def test_a_folder_written_two_ways_is_one_dataset(tmp_path, monkeypatch):
    write_shapes_folder(tmp_path / "shapes-folder", per_class=1)
    monkeypatch.chdir(tmp_path)
    request = EvalRequest(models=["tiny-clip"], datasets=["shapes-folder", "./shapes-folder/",
                                                          str(tmp_path / "shapes-folder")],
                          attack="none", n_samples=8, out=tmp_path / "out", device="cpu")
    assert _keys(run_eval(request).rows) == [("tiny-clip", "shapes-folder", "none", "0")]


def test_a_repeated_encoder_gives_one_set_of_captioning_rows(tmp_path):
    eps = [parse_eps("4/255"), parse_eps("0.0156862745")]
    request = VLMEvalRequest(task="captioning", models=["tiny-clip", "tiny-clip"], attack="apgd", eps=eps,
                             n_samples=2, n_iter=1, out=tmp_path, device="cpu")
    result = run_vlm_eval(request)
    assert [(r["model"], r["eps_text"]) for r in result.rows] == [("tiny-vlm[tiny-clip]", "0"),
                                                                   ("tiny-vlm[tiny-clip]", "4/255")]
    assert len(result.sample_rows) == 2  # one row per sample and eps (clean and adversarial texts side by side)


def test_eps_count_once_when_their_values_agree():
    assert [e.text for e in unique_eps([parse_eps("4/255"), parse_eps("0.0156862745"), parse_eps("8/255")])] == [
        "4/255", "8/255"]
    assert unique_eps(["2/255", "4/255", " 2/255", "0.00784313725", "0.0157"]) == ["2/255", "4/255", "0.0157"]
    assert unique_eps(["lots", "lots", "4/255"]) == ["lots", "4/255"]  # left for the parser to refuse, once


def test_a_protocol_keeps_each_eps_once_in_first_seen_order():
    protocol = get_protocol("default").override(eps=["8/255", "4/255", "0.0313725490"])
    assert protocol.eps == ("8/255", "4/255")
    assert [e.text for e in protocol.eps_values()] == ["8/255", "4/255"]


def test_unique_values_keeps_the_first_spelling(tmp_path, monkeypatch):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert unique_values(["runs/a", "tiny-clip", "./runs/a/", "tiny-clip", str(tmp_path / "runs" / "a")]) == [
        "runs/a", "tiny-clip"]
    (tmp_path / "tiny-clip").mkdir()  # a folder named like the built-in model: the name still means the model
    assert unique_values(["tiny-clip", "./tiny-clip"], names={"tiny-clip"}) == ["tiny-clip", "./tiny-clip"]
