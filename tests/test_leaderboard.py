"""``simclip leaderboard``: result files in, Markdown / CSV / HTML / plots out, nothing recomputed."""
from __future__ import annotations

import pandas as pd
import pytest
from _leaderboard_data import HASH_A, HASH_B, model_rows, row, two_models, write_results
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.errors import UserError
from simclip_bench.leaderboard.headline import HEADLINES
from simclip_bench.leaderboard.load import load_results
from simclip_bench.leaderboard.render import check_leaderboard, render_leaderboard
from simclip_bench.leaderboard.table import build_leaderboard, eps_label

runner = CliRunner()


def _board(directory):
    return build_leaderboard(load_results(directory), {})


def test_columns_are_clean_then_each_eps_written_as_n_over_255(tmp_path):
    lb = _board(two_models(tmp_path))
    assert [c.label for c in lb.columns] == ["clean", "2/255", "4/255"]


def test_rows_are_ranked_by_robust_score_at_the_largest_eps(tmp_path):
    lb = _board(two_models(tmp_path))
    assert [e.model for e in lb.entries] == ["runs/robust", "tiny-clip"]


def test_a_cell_is_the_worst_case_over_attacks_at_that_eps(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3) + [row("m", 4 / 255, 0.2, attack="apgd-t")]
    lb = _board(write_results(tmp_path, rows))
    cell = lb.entries[0].cells[lb.columns[-1]]
    assert cell.value == pytest.approx(0.2)
    assert cell.attacks == ("apgd-ce", "apgd-t")


def test_a_rerun_replaces_the_earlier_row_of_the_same_measurement(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3) + [row("m", 4 / 255, 0.35, created_at="2026-02-01T00:00:00+00:00")]
    lb = _board(write_results(tmp_path, rows))
    assert lb.entries[0].cells[lb.columns[-1]].value == pytest.approx(0.35)


def test_a_task_score_is_the_mean_over_its_datasets(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3) + model_rows("m", 0.7, 0.3, 0.1, dataset="cifar10")
    lb = _board(write_results(tmp_path, rows))
    assert lb.entries[0].cells[lb.columns[0]].value == pytest.approx(0.8)
    assert lb.datasets["zeroshot"] == ("cifar10", "shapes")


def test_each_task_shows_its_declared_headline_metric_only(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3)
    rows += [row("m", 0.0, 1.10, task="captioning", metric="cider", dataset="coco"),
             row("m", 0.0, 0.30, task="captioning", metric="bleu4", dataset="coco"),
             row("m", 4 / 255, 0.20, task="captioning", metric="cider", dataset="coco", attack="apgd")]
    lb = _board(write_results(tmp_path, rows))
    assert lb.tasks == ["zeroshot", "captioning"]
    assert HEADLINES["captioning"].metric == "cider"
    captioning = {c.label: lb.entries[0].cells[c].value for c in lb.columns_of("captioning")}
    assert captioning == {"clean": pytest.approx(1.10), "4/255": pytest.approx(0.20)}


def test_an_undeclared_task_with_several_metrics_is_named_as_not_shown(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3)
    rows += [row("m", 0.0, 0.5, task="retrieval", metric="r@1"), row("m", 0.0, 0.7, task="retrieval", metric="r@5")]
    directory = write_results(tmp_path / "r", rows)
    render_leaderboard(directory, tmp_path / "out")
    assert "Not shown" in (tmp_path / "out" / "LEADERBOARD.md").read_text()
    assert "retrieval" not in _board(directory).tasks


def test_eps_labels_read_as_people_write_them():
    assert (eps_label(0), eps_label(4 / 255), eps_label(0.5, "l2")) == ("clean", "4/255", "l2 0.5")


def test_markdown_has_one_row_per_model_with_intervals_and_the_masking_flags(tmp_path):
    render_leaderboard(two_models(tmp_path), tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| # | model | clean | 2/255 | 4/255 | flags |"
    assert table[1].startswith("| 1 | runs/robust | 85.0 (80.0–90.0) | 60.0 (55.0–65.0) | 45.0 (40.0–50.0) | "
                               "zero-gradients(3/200) |")
    assert table[2].startswith("| 2 | tiny-clip | 90.0 (85.0–95.0) | 40.0 (35.0–45.0) | 10.0 (5.0–15.0) |")
    assert "n = 200 samples per cell" in md


def test_csv_holds_the_unscaled_numbers_in_leaderboard_order(tmp_path):
    render_leaderboard(two_models(tmp_path), tmp_path)
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(table["model"]) == ["runs/robust", "tiny-clip"]
    assert list(table["zeroshot:4/255"]) == [0.45, 0.10]
    assert list(table["checkpoint_sha256"]) == [HASH_B, HASH_A]


def test_a_model_name_cannot_inject_markup_into_markdown_or_html(tmp_path):
    name = '<script>alert(1)</script>|*x*'
    render_leaderboard(write_results(tmp_path, model_rows(name, 0.9, 0.5, 0.3)), tmp_path)
    html = (tmp_path / "leaderboard.html").read_text()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|*x*" in html
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "<script>" not in md and "\\|" in md


def test_html_links_each_model_to_its_card(tmp_path):
    cards = [{"model": "tiny-clip", "checkpoint_sha256": HASH_A, "name": "tiny-clip", "arch": "simclip-tiny",
              "tag": "builtin", "source": "shipped"}]
    directory = write_results(tmp_path, model_rows("tiny-clip", 0.9, 0.5, 0.3), cards)
    render_leaderboard(directory, tmp_path)
    html = (tmp_path / "leaderboard.html").read_text()
    assert 'href="#card-tiny-clip-aaaaaaaa"' in html and 'id="card-tiny-clip-aaaaaaaa"' in html
    assert "simclip-tiny" in html


def test_html_shows_masking_flags_and_embeds_the_plots(tmp_path):
    render_leaderboard(two_models(tmp_path), tmp_path)
    html = (tmp_path / "leaderboard.html").read_text()
    assert '<span class="flag">zero-gradients(3/200)</span>' in html
    assert html.count("data:image/png;base64,") == 2
    assert "<link" not in html and "src=\"http" not in html  # self-contained


def test_rendering_twice_gives_byte_identical_files(tmp_path):
    directory = two_models(tmp_path / "results")
    first, second = render_leaderboard(directory, tmp_path / "a"), render_leaderboard(directory, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_check_passes_on_a_fresh_render_and_names_a_stale_file(tmp_path):
    directory = two_models(tmp_path)
    render_leaderboard(directory, tmp_path)
    assert check_leaderboard(directory, tmp_path) == []
    (tmp_path / "LEADERBOARD.md").write_text("edited by hand\n")
    (tmp_path / "plots" / "gone_score_vs_eps.png").write_bytes(b"old")
    assert check_leaderboard(directory, tmp_path) == ["LEADERBOARD.md differs", "plots/gone_score_vs_eps.png is stale"]


def test_cli_check_exits_1_when_the_committed_leaderboard_is_stale(tmp_path):
    directory = two_models(tmp_path)
    assert runner.invoke(app, ["leaderboard", str(directory)]).exit_code == 0
    assert runner.invoke(app, ["leaderboard", str(directory), "--check"]).exit_code == 0
    (tmp_path / "leaderboard.csv").write_text("x\n")
    assert runner.invoke(app, ["leaderboard", str(directory), "--check"]).exit_code == 1


def test_missing_results_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["leaderboard", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no results.csv" in result.output
    assert not out.exists()


def test_a_results_file_without_the_schema_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the result columns"):
        render_leaderboard(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pope_shows_f1_averaged_over_its_splits_and_scienceqa_its_accuracy(tmp_path):
    rows = model_rows("m", 0.9, 0.5, 0.3)
    for split, f1 in (("random", 0.9), ("popular", 0.8), ("adversarial", 0.7)):
        for metric, value in (("accuracy", 0.5), ("f1", f1), ("yes_ratio", 0.6)):
            rows.append(row("tiny-vlm[m]", 0.0, value, task="pope", metric=metric, dataset=f"pope-{split}"))
    rows.append(row("tiny-vlm[m]", 0.0, 0.4, task="scienceqa", metric="accuracy", dataset="scienceqa"))
    lb = _board(write_results(tmp_path, rows))
    assert lb.tasks == ["zeroshot", "pope", "scienceqa"]
    entry = lb.entries[0]
    assert entry.cells[lb.columns_of("pope")[0]].value == pytest.approx(0.8)
    assert entry.cells[lb.columns_of("pope")[0]].datasets == ("pope-adversarial", "pope-popular", "pope-random")
    assert entry.cells[lb.columns_of("scienceqa")[0]].value == pytest.approx(0.4)
