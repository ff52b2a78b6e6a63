"""What ``simclip eval`` prints: one interval method per kind of number, named in the header, and each
printed interval the one in the result files; the summary only with several datasets, the paired
differences only with several models; the norm beside every eps."""
from __future__ import annotations

import pandas as pd
import pytest
from _shapes_folder import write_shapes_folder
from typer.testing import CliRunner

from simclip_bench.cli import app
from simclip_bench.cli.app import stdout
from simclip_bench.results.aggregate import summary_table
from simclip_bench.results.intervals import average_interval, paired_difference_interval
from simclip_bench.results.schema import wilson_interval

TINY = ["--n-samples", "9", "--iterations", "2", "--batch-size", "9", "--device", "cpu"]


@pytest.fixture(scope="module")
def other_encoder(perturbed_encoder):
    return perturbed_encoder


def run_eval(args: list[str], where, monkeypatch) -> list[tuple[str, list[str], list[list[str]]]]:
    """Run ``simclip eval ARGS`` in ``where``; the printed tables as (title, header, rows)."""
    monkeypatch.chdir(where)
    monkeypatch.setattr(stdout, "width", 240)  # wide enough that no cell wraps
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 0, result.output
    return parse_tables(result.output)


def parse_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    tables, title, header, rows = [], "", [], []
    previous = ""
    for line in text.splitlines():
        if line.startswith("┏"):
            title, header, rows = previous.strip(), [], []
        elif line.startswith("┃"):
            header = [c.strip() for c in line.strip("┃").split("┃")]
        elif line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
        elif line.startswith("└"):
            tables.append((title, header, rows))
        previous = line
    return tables


def shown(low: float, high: float, signed: bool = False) -> str:
    return f"{100 * low:+.1f} to {100 * high:+.1f}" if signed else f"{100 * low:.1f}–{100 * high:.1f}"


def eps_shown(row) -> str:
    return f"{row['eps_text']} ({row['norm']})" if isinstance(row["norm"], str) and row["norm"] else "0"


def test_each_printed_interval_is_the_one_in_the_result_files(other_encoder, tmp_path, monkeypatch):
    tables = run_eval(["--model", "tiny-clip", "--model", str(other_encoder), "--eps", "4/255", "--eps", "8/255",
                       "--out", "out", *TINY], tmp_path, monkeypatch)
    titles = [t for t, _, _ in tables]
    assert not any(t.startswith("summary") for t in titles), "one dataset: no summary (it would repeat the rows)"
    cells = next(t for t in tables if t[0].startswith("zero-shot accuracy"))
    assert cells[1][-2:] == ["95% CI (Wilson)", "grad evals / sample"]
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False)
    expected = {(r["model"], r["attack"], eps_shown(r)): (shown(r["ci_low"], r["ci_high"]), f"{r['grad_evals']:.1f}")
                for _, r in results.iterrows()}
    assert len(cells[2]) == 6
    for model, _dataset, attack, eps, _n, _accuracy, interval, cost in cells[2]:
        assert (interval, cost) == expected[(model, attack, eps)]
        assert (float(cost) > 0) == (attack != "none")
    paired = next(t for t in tables if t[0].startswith("paired difference"))
    assert paired[1][-1] == "95% CI (Newcombe)"
    stored = pd.read_csv(tmp_path / "out" / "paired.csv", keep_default_na=False)
    expected = {(r["model"], r["attack"], eps_shown({"eps_text": r["eps"], "norm": r["norm"]})):
                shown(r["ci_low"], r["ci_high"], signed=True) for _, r in stored.iterrows() if r["dataset"] == "shapes"}
    assert len(paired[2]) == 3
    for model, attack, eps, _n, _difference, interval in paired[2]:
        assert interval == expected[(model, attack, eps)]


def test_the_summary_needs_several_datasets_and_shows_the_norm(tmp_path, monkeypatch):
    folder = write_shapes_folder(tmp_path / "folder", per_class=2)
    tables = run_eval(["--model", "tiny-clip", "--dataset", "shapes", "--dataset", str(folder), "--norm", "l2",
                       "--eps", "0.5", "--out", "out", *TINY], tmp_path, monkeypatch)
    assert not any(t.startswith("paired") for t, _, _ in tables), "one model: nothing to pair"
    cells = next(t for t in tables if t[0].startswith("zero-shot accuracy"))
    assert [row[3] for row in cells[2]] == ["0", "0.5 (l2)"] * 2
    title, header, rows = next(t for t in tables if t[0].startswith("summary"))
    assert header[2] == "eps" and header[-1] == "95% CI (Wilson, n_eff)"
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False)
    assert [row[2] for row in rows] == ["0", "0.5 (l2)"]
    assert [row[-1] for row in rows] == [shown(r["ci_low"], r["ci_high"]) for _, r in summary.iterrows()]


def test_an_average_over_one_dataset_has_that_datasets_wilson_interval():
    rows = pd.DataFrame([{"model": "m", "attack": "apgd-ce", "norm": "linf", "eps_text": "4/255", "dataset": "d",
                          "value": 0.0, "n_samples": 9}])
    s = summary_table(rows).iloc[0]
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(0, 9))
    assert s["ci_high"] > 0.29  # not the 0.0-0.0 of a normal interval at 0 %


def test_an_average_over_equal_datasets_is_the_pooled_wilson_interval():
    assert average_interval([0.9, 0.8], [100, 100])[1:] == pytest.approx(wilson_interval(170, 200))


def test_a_paired_difference_without_disagreement_still_has_an_interval():
    low, high = paired_difference_interval(both=8, only_first=0, only_second=0, neither=1)
    assert low < 0 < high and high - low > 0.3
    low, high = paired_difference_interval(both=14, only_first=5, only_second=0, neither=22)
    assert 0 < low < 5 / 41 < high


def _vlm_result(attack_cost: float):
    from types import SimpleNamespace

    rows = [{"model": "tiny-vlm[tiny-clip]", "attack": attack, "eps_text": eps, "norm": norm, "value": 0.5,
             "ci_low": 0.4, "ci_high": 0.6, "seconds": seconds, "grad_evals": cost, "n_samples": 10}
            for attack, eps, norm, seconds, cost in (("none", "0", "", 3.0, 0.0),
                                                     ("ensemble", "4/255", "linf", 0.0, attack_cost))]
    return SimpleNamespace(rows=rows, results_path="out[/x]/results.csv", samples_path="out[/x]/vlm_samples.csv")


def _printed(monkeypatch, print_table) -> list[str]:
    import io

    from rich.console import Console

    from simclip_bench.cli import eval_tables

    out = io.StringIO()
    monkeypatch.setattr(eval_tables, "stdout", Console(file=out, width=300))
    print_table()
    return out.getvalue().splitlines()


@pytest.mark.parametrize("task, method", [("vqa", "95% CI (Wilson of the mean)"), ("captioning", "95% CI (normal)")])
def test_each_vlm_table_names_the_interval_its_rows_were_computed_with(task, method, monkeypatch):
    from simclip_bench.cli.eval_tables import print_vlm_rows

    lines = _printed(monkeypatch, lambda: print_vlm_rows(task, "shapes", "vqav2", _vlm_result(12.0)))
    (_, header, _), = parse_tables("\n".join(lines))
    assert header[-3:] == [method, "seconds", "grad evals / sample"]
    assert lines[-1] == "results: out[/x]/results.csv  per-sample texts: out[/x]/vlm_samples.csv"  # as written


def test_an_attack_row_that_attacked_nothing_says_why(monkeypatch):
    from simclip_bench.cli.eval_tables import print_vlm_rows

    lines = _printed(monkeypatch, lambda: print_vlm_rows("captioning", "shapes", "vqav2", _vlm_result(0.0)))
    (_, _, rows), = parse_tables("\n".join(lines))
    assert rows[0][-2:] == ["3", "0.0"] and rows[1][-2:] == ["0 *", "0.0 *"]  # the clean row needs no reason
    assert any(line.startswith("* nothing to attack: every sample's clean score was already below") for line in lines)
    lines = _printed(monkeypatch, lambda: print_vlm_rows("captioning", "shapes", "vqav2", _vlm_result(4.0)))
    assert not any("nothing to attack" in line for line in lines)


def test_tables_in_a_log_are_printed_whole_not_cut_to_80_columns(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([sys.executable, "-m", "simclip_bench", "ls", "models"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # stdout is a pipe, as under tee or Slurm
    row = next(line for line in done.stdout.splitlines() if "hf-hub:zw123/delta_clip_h14_336" in line)
    assert "ViT-H-14 (336 px) (from scratch)" in row and "adversarial pre-training" in row and "4/255" in row
    assert "…" not in done.stdout


def test_an_out_folder_with_rich_markup_in_its_name_is_printed_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--attack", "none", "--n-samples", "2", "--out", "res[/x]"])
    assert result.exit_code == 0, result.output
    assert "reused from res[/x]/" in result.output and "res[/x]/results.csv" in result.output
    result = CliRunner().invoke(app, ["leaderboard", "res[/x]", "--out", "lb[/y]"])
    assert result.exit_code == 0, result.output
    assert "files to lb[/y]" in result.output
    result = CliRunner().invoke(app, ["leaderboard", "res[/x]", "--out", "lb[/y]", "--check"])
    assert result.exit_code == 0 and "lb[/y]: up to date with res[/x]" in result.output
