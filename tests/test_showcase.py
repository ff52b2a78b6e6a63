"""The showcase: every objective on every task under the strongest protocols, and the page that shows it.

``simclip bench --suite showcase`` trains the base model's fine-tunes (the paper's Sim-CLIP, the released
code's, the blend, FARE, TeCoA at 4/255 and Sim-CLIP at 2/255), evaluates zero-shot under RobustVLM's
protocol and standard AutoAttack, captioning and VQA under RobustVLM's ensemble, and the leaderboard shows
one column per protocol, the price of robustness and the published numbers apart from the measured ones.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from _leaderboard_data import HASH_A, HASH_B, model_rows, row, write_results

from simclip_bench.jobs import bench, suites
from simclip_bench.leaderboard.load import load_cards, load_results
from simclip_bench.leaderboard.plots import frontier
from simclip_bench.leaderboard.price import prices
from simclip_bench.leaderboard.protocol_docs import PROTOCOL_DOCS
from simclip_bench.leaderboard.render import render_leaderboard
from simclip_bench.leaderboard.table import build_leaderboard
from simclip_bench.results.store import upsert_results

ROOT = Path(__file__).resolve().parents[1]
HASH_C = "c" * 64


# --- the suite ---------------------------------------------------------------------------------------------

def test_the_showcase_trains_every_objective_at_4_over_255_and_sim_clip_at_2_over_255():
    suite = suites.get_suite("showcase")
    tunes = {(t.label, t.eps) for t in suite.trained()}
    assert tunes == {("simclip", "4/255"), ("simclip-anchored", "4/255"), ("simclip-anchor1", "4/255"),
                     ("fare", "4/255"), ("tecoa", "4/255"), ("simclip-anchored", "2/255")}
    paper = next(t for t in suite.trained() if t.objective == "simclip" and not t.anchor_weight)
    assert paper.collapse_stop == 0  # the paper's form runs to the end, so its row shows what it became
    assert suite.train_steps is None  # each objective's default recipe


def test_the_showcase_runs_every_task_at_clean_2_and_4_over_255_with_robustvlm_and_autoattack_for_zero_shot():
    suite = suites.get_suite("showcase")
    assert suite.tasks == ("zeroshot", "captioning", "vqa")
    assert suite.eps == ("2/255", "4/255")
    assert suite.zeroshot_protocols() == ("robustvlm", "autoattack")
    assert all(suite.samples_for(t) >= 20 for t in suite.tasks)


def _recording_runners(monkeypatch) -> list[tuple[str, str, int]]:
    calls = []

    def runner(task):
        def run(ctx: suites.TaskContext) -> None:
            calls.append((task, ctx.protocol, ctx.n_samples))
            protocol = ctx.protocol if task == "zeroshot" else "ensemble"
            rows = [dict(r, protocol=protocol if r["eps"] else "", task=task, attack=protocol if r["eps"] else "none",
                         metric={"zeroshot": "accuracy", "captioning": "cider", "vqa": "vqa_accuracy"}[task])
                    for m in ctx.models for r in model_rows(m, 0.9, 0.5, 0.2)]
            upsert_results(ctx.out, rows)
        return run

    for task in suites.TASK_RUNNERS:
        monkeypatch.setitem(suites.TASK_RUNNERS, task, runner(task))
    return calls


def test_a_suite_runs_zero_shot_once_per_protocol_with_each_tasks_sample_count(tmp_path, monkeypatch):
    calls = _recording_runners(monkeypatch)
    suite = replace(suites.get_suite("showcase"), fine_tunes=(), objectives=(),
                    task_samples=(("zeroshot", 30), ("captioning", 7), ("vqa", 9)))
    out = bench.run_suite(suite, tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu", log=lambda _: None)
    assert calls == [("zeroshot", "robustvlm", 30), ("zeroshot", "autoattack", 30), ("captioning", "robustvlm", 7),
                     ("vqa", "robustvlm", 9)]
    header = pd.read_csv(out / "leaderboard.csv").columns
    assert {"zeroshot:2/255 robustvlm", "zeroshot:4/255 autoattack", "captioning:4/255", "vqa:clean"} <= set(header)


def test_the_blend_and_the_paper_form_train_with_their_own_options_into_their_own_runs(tmp_path, monkeypatch):
    seen = []

    def fake_train(cfg, progress=None, log=print):
        seen.append((Path(cfg.out).name, cfg.objective, cfg.anchor_weight, cfg.collapse_stop, cfg.eps))
        Path(cfg.out).mkdir(parents=True)
        (Path(cfg.out) / "encoder.safetensors").write_bytes(b"")
        return Path(cfg.out)

    monkeypatch.setattr("simclip_bench.train.loop.train", fake_train)
    suite = replace(suites.get_suite("showcase"), fine_tunes=(
        suites.FineTune("simclip", collapse_stop=0.0), suites.FineTune("simclip", anchor_weight=1.0)))
    bench.ensure_trained(suite, tmp_path, "cpu", log=lambda _: None)
    assert seen == [("tiny-clip-simclip-eps4-250steps", "simclip", 0.0, 0.0, "4/255"),
                    ("tiny-clip-simclip-anchor1-eps4-250steps", "simclip", 1.0, 0.2, "4/255")]


def test_a_finished_run_trained_without_the_anchor_is_not_taken_for_the_blend(tmp_path):
    suite = replace(suites.get_suite("showcase"), fine_tunes=(suites.FineTune("simclip", anchor_weight=1.0),),
                    train_steps=3, train_batch_size=8, train_size=64, train_warmup_steps=1)
    run = tmp_path / bench.run_name("tiny-clip", "simclip-anchor1", "4/255", 3)
    run.mkdir()
    (run / "encoder.safetensors").write_bytes(b"")
    config = {"model": "tiny-clip", "objective": "simclip", "eps": "4/255", "steps": 3, "batch_size": 8, "lr": 0.001,
              "seed": 0, "train_size": 64, "anchor_weight": 0.0}
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(bench.UserError, match="other settings"):
        bench.ensure_trained(suite, tmp_path, "cpu", log=lambda _: None)
    (run / "config.json").write_text(json.dumps({**config, "anchor_weight": 1.0}))
    assert bench.ensure_trained(suite, tmp_path, "cpu", log=lambda _: None) == [str(run)]


# --- one column per protocol -------------------------------------------------------------------------------

def _two_protocols(directory: Path, evil: str = "runs/robust") -> Path:
    rows = []
    for model, digest, rv, aa in (("tiny-clip", HASH_A, (0.5, 0.1), (0.48, 0.08)),
                                  (evil, HASH_B, (0.7, 0.5), (0.66, 0.45))):
        rows.append(row(model, 0.0, 0.9 if model == "tiny-clip" else 0.85, checkpoint_hash=digest))
        for eps, v_rv, v_aa in zip((2 / 255, 4 / 255), rv, aa, strict=True):
            rows.append(dict(row(model, eps, v_rv, attack="apgd-ce*5+apgd-t", checkpoint_hash=digest),
                             protocol="robustvlm"))
            rows.append(dict(row(model, eps, v_aa, attack="autoattack", checkpoint_hash=digest), protocol="autoattack"))
        for task, metric in (("captioning", "cider"), ("vqa", "vqa_accuracy")):
            for r in model_rows(f"tiny-vlm[{model}]", 0.8, 0.4, 0.2, checkpoint_hash=digest, task=task, metric=metric):
                rows.append(dict(r, protocol="ensemble" if r["eps"] else ""))
    cards = [{"model": "tiny-clip", "checkpoint_sha256": HASH_A, "name": "tiny-clip", "arch": "simclip-tiny",
              "tag": "builtin"},
             {"model": evil, "checkpoint_sha256": HASH_B, "name": evil, "arch": "simclip-tiny", "tag": "builtin",
              "objective": "fare", "training": {"base_checkpoint_hash": HASH_A}}]
    return write_results(directory, rows, cards)


def _board(directory: Path):
    return build_leaderboard(load_results(directory), load_cards(directory))


def test_each_zero_shot_protocol_gets_its_own_named_columns_and_clean_is_one_column(tmp_path):
    lb = _board(_two_protocols(tmp_path))
    assert [c.label for c in lb.columns_of("zeroshot")] == ["clean", "2/255 robustvlm", "4/255 robustvlm",
                                                             "2/255 autoattack", "4/255 autoattack"]
    assert [c.label for c in lb.columns_of("captioning")] == ["clean", "2/255", "4/255"]  # one protocol: unnamed
    assert {c.protocol for c in lb.columns_of("captioning") if not c.is_clean} == {"ensemble"}


def test_a_protocol_cell_holds_only_that_protocols_rows(tmp_path):
    lb = _board(_two_protocols(tmp_path))
    robust = next(e for e in lb.entries if e.model == "runs/robust")
    values = {c.label: robust.cells[c].value for c in lb.columns_of("zeroshot")}
    assert values["4/255 robustvlm"] == 0.5 and values["4/255 autoattack"] == 0.45
    assert lb.worst_case(robust, "zeroshot", 4 / 255) == 0.45  # the plots and the price use the worst case


def test_every_protocol_names_a_section_of_docs_protocols_that_exists():
    doc = (ROOT / "docs" / "protocols.md").read_text()
    for protocol, (anchor, _) in PROTOCOL_DOCS.items():
        assert f'<a id="{anchor}"></a>' in doc, protocol


def test_every_in_page_link_of_the_rendered_pages_resolves(tmp_path):
    render_leaderboard(_two_protocols(tmp_path), tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    html = (tmp_path / "leaderboard.html").read_text()
    md_targets = set(re.findall(r'<a id="([^"]+)"></a>', md))
    html_targets = set(re.findall(r'id="([^"]+)"', html))
    md_links = set(re.findall(r"\]\(#([^)]+)\)", md))
    html_links = set(re.findall(r'href="#([^"]+)"', html))
    assert {"protocol-robustvlm", "protocol-autoattack", "protocol-ensemble"} <= md_links & html_links
    assert md_links <= md_targets and html_links <= html_targets
    assert not re.search(r"\]\((?!#|https?:)[^)]+\)", md), "a relative link breaks once the page is copied"
    assert not re.search(r'href="(?!#|https?:|data:)', html)


def test_the_pages_name_and_link_each_columns_protocol_and_state_the_sample_counts(tmp_path):
    render_leaderboard(_two_protocols(tmp_path), tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    html = (tmp_path / "leaderboard.html").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # | model |"))
    assert "| zeroshot 2/255 robustvlm | zeroshot 4/255 robustvlm | zeroshot 2/255 autoattack |" in header
    assert "[robustvlm](#protocol-robustvlm)" in md and "[ensemble](#protocol-ensemble)" in md
    assert '<a href="#protocol-autoattack"' in html
    assert "n = 200 samples per cell" in md and "n = 200 samples per cell" in html


# --- the frontier and the price ----------------------------------------------------------------------------

def test_the_frontier_keeps_the_points_no_other_point_beats_on_both_scores():
    points = [(90.0, 10.0), (85.0, 50.0), (80.0, 40.0), (70.0, 60.0), (85.0, 45.0)]
    assert frontier(points) == [(70.0, 60.0), (85.0, 50.0), (90.0, 10.0)]
    assert frontier([(50.0, 50.0)]) == [(50.0, 50.0)]


def test_the_price_is_clean_points_lost_per_robust_point_gained_against_the_base(tmp_path):
    lb = _board(_two_protocols(tmp_path))
    by_eps = {(p.task, round(p.eps * 255)): p for p in prices(lb)}
    p = by_eps[("zeroshot", 4)]
    assert p.entry.model == "runs/robust" and p.base.model == "tiny-clip"
    assert p.clean_drop == pytest.approx(5.0) and p.robust_gain == pytest.approx(45.0 - 8.0)
    assert p.clean_per_robust_point == pytest.approx(5.0 / 37.0)
    assert math.isnan(replace(p, robust_gain=0.0).clean_per_robust_point)  # nothing bought
    assert replace(p, clean_drop=-3.0).clean_per_robust_point == 0.0  # clean rose too: robustness for free
    assert ("captioning", 2) in by_eps


def test_the_price_table_is_on_both_pages(tmp_path):
    render_leaderboard(_two_protocols(tmp_path), tmp_path)
    for name in ("LEADERBOARD.md", "leaderboard.html"):
        assert "The price of robustness" in (tmp_path / name).read_text()


# --- published numbers stay apart ---------------------------------------------------------------------------

def test_published_numbers_are_a_separate_quoted_section_after_the_measured_table(tmp_path):
    render_leaderboard(_two_protocols(tmp_path), tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    html = (tmp_path / "leaderboard.html").read_text()
    assert md.index("## Published numbers (quoted, not re-measured)") > md.index("| # | model |")
    quoted = html[html.index('<section class="quoted"'):]
    assert "quoted, not re-measured" in quoted and "FARE⁴" in quoted
    measured = html[html.index('<table class="leaderboard"'):html.index("</table>")]
    assert "FARE⁴" not in measured


# --- the committed showcase ---------------------------------------------------------------------------------

def test_the_committed_leaderboard_is_the_showcase_with_at_least_7_models_on_3_tasks():
    results = ROOT / "results"
    config = json.loads((results / "bench_config.json").read_text())
    assert config["name"] == "showcase"
    board = pd.read_csv(results / "leaderboard.csv")
    assert len(board) >= 7
    for task in ("zeroshot", "captioning", "vqa"):
        for column in ("clean", "2/255", "4/255"):
            matches = [c for c in board.columns if re.fullmatch(rf"{task}:{re.escape(column)}( \w+)?", c)]
            assert matches and not board[matches].isna().any(axis=None), (task, column)
    assert {"zeroshot:2/255 autoattack", "zeroshot:4/255 autoattack"} <= set(board.columns)


# --- intervals of captioning and VQA scores stay inside what the metric can be ----------------------------

def test_vqa_intervals_are_conservative_wilson_inside_0_and_1_and_cider_intervals_stop_at_0():
    from simclip_bench.results.intervals import mean_interval, unit_mean_interval

    mean, lo, hi = unit_mean_interval([1.0, 1.0, 1.0, 1.0])
    assert mean == 1.0 and 0.4 < lo < 0.6 and hi == 1.0  # four right answers do not make a certainty
    mean, lo, hi = unit_mean_interval([0.0, 1.0, 0.0, 1.0, 0.3])
    assert 0.0 <= lo < mean < hi <= 1.0
    assert mean_interval([0.0, 0.0, 3.0], lowest=0.0)[1] == 0.0


def test_captioning_and_vqa_result_rows_carry_those_intervals():
    from simclip_bench.data.vlm_samples import shapes_captioning, shapes_vqa
    from simclip_bench.tasks import vlm_rows
    from simclip_bench.tasks.captioning import CaptioningTask
    from simclip_bench.tasks.vqa import VQATask

    summary = VQATask(shapes_vqa(4)).summarise(["a"] * 4, [1.0] * 4)
    (vqa,) = vlm_rows.result_rows({}, "none", {}, None, summary, 1.0, "")
    assert vqa["metric"] == "vqa_accuracy" and vqa["value"] == 1.0 and vqa["ci_low"] < 0.6 and vqa["ci_high"] == 1.0
    summary = CaptioningTask(shapes_captioning(3)).summarise(["a"] * 3, [0.0, 0.0, 3.0])
    (cider,) = vlm_rows.result_rows({}, "none", {}, None, summary, 1.0, "")
    assert cider["metric"] == "cider" and cider["ci_low"] == 0.0 and cider["ci_high"] > 1.0


def test_a_protocol_name_with_markdown_in_it_is_escaped_in_the_header(tmp_path):
    path = _two_protocols(tmp_path / "in")
    rows = pd.read_csv(path / "results.csv", keep_default_na=False)
    rows.loc[rows["protocol"] == "autoattack", "protocol"] = "auto|attack*x[y](z)"
    rows.to_csv(path / "results.csv", index=False)
    render_leaderboard(path, tmp_path / "out")
    md = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # | model |"))
    assert "auto\\|attack\\*x\\[y\\](z)" in header
    rule = next(line for line in md.splitlines() if line.startswith("|---"))
    assert len(header.split(" | ")) == len(rule.split("|")) - 2
