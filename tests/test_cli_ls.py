"""``simclip ls``: what is available, from the registries themselves."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app

runner = CliRunner()


def _plain(kind: str) -> list[list[str]]:
    result = runner.invoke(app, ["ls", kind, "--plain"])
    assert result.exit_code == 0, result.output
    return [line.split("\t") for line in result.output.splitlines()]


def test_ls_models_lists_the_builtin_and_the_public_robust_checkpoints():
    names = [row[0] for row in _plain("models")]
    assert names[0] == "tiny-clip"
    for hub_id in ("hf-hub:chs20/fare2-clip", "hf-hub:chs20/fare4-clip", "hf-hub:chs20/tecoa2-clip",
                   "hf-hub:chs20/tecoa4-clip"):
        assert hub_id in names


def test_ls_models_gives_each_public_checkpoint_its_provenance():
    rows = {row[0]: row for row in _plain("models") if len(row) == 5}
    assert rows["hf-hub:chs20/fare4-clip"][1:4] == ["ViT-L-14:openai", "fare", "4/255"]
    assert rows["hf-hub:chs20/tecoa2-clip"][1:4] == ["ViT-L-14:openai", "tecoa", "2/255"]
    lines = runner.invoke(app, ["ls", "models", "--plain"]).output
    assert "arXiv 2402.12336" in lines and "hossainzarif19/SimCLIP" in lines
    assert rows["simclip4=/path/to/simclip4.pt"][1:4] == ["ViT-L-14:openai", "simclip-anchored", "4/255"]


def test_ls_models_spec_column_holds_only_what_model_accepts():
    from simclip_bench.models.spec_syntax import parse_model_spec

    specs = [row[0] for row in _plain("models") if len(row) == 5]
    assert specs and all(parse_model_spec(s).kind in ("builtin", "hf-hub", "arch-tag", "vision-tower") for s in specs)
    assert "simclip4=/path/to/simclip4.pt" in specs  # a vision-tower release: NAME=FILE


def test_every_catalog_entry_has_paper_eps_reported_attack_and_a_unique_listed_spec():
    from simclip_bench.attacks.eps import parse_eps
    from simclip_bench.models.known_checkpoints import KNOWN_CHECKPOINTS

    listed = [row[0] for row in _plain("models") if len(row) == 5]
    specs = [c.spec for c in KNOWN_CHECKPOINTS.values()]
    assert len(set(specs)) == len(specs)
    for c in KNOWN_CHECKPOINTS.values():
        assert c.paper and c.source.startswith("https://") and c.reported_attack, c.name
        assert 0 < parse_eps(c.eps).value <= 1, c.name
        assert c.spec in listed, c.name
        assert not c.tower_file or c.spec == f"{c.name}=/path/to/{c.tower_file}", c.name


def test_ls_attacks_lists_every_registered_attack():
    from simclip_bench.attacks.registry import SINGLE_ATTACKS

    names = [row[0] for row in _plain("attacks")]
    assert set(SINGLE_ATTACKS) <= set(names) and "autoattack" in names


def test_ls_objectives_lists_every_registered_objective_and_marks_the_default():
    from simclip_bench.train.objectives import OBJECTIVES

    rows = dict((row[0], row[1]) for row in _plain("objectives"))
    assert set(rows) == set(OBJECTIVES)
    assert rows["simclip-anchored"].endswith("(default)")


def test_ls_datasets_lists_the_builtin_data_first():
    assert _plain("datasets")[0][0] == "shapes"


def test_ls_protocols_lists_eval_protocols_and_bench_suites():
    names = [row[0] for row in _plain("protocols")]
    assert "eval --protocol robustvlm" in names and "bench --suite default" in names


@pytest.mark.parametrize("kind", ["models", "datasets", "attacks", "objectives", "protocols", "tasks"])
def test_ls_renders_a_table_for_every_kind(kind):
    result = runner.invoke(app, ["ls", kind])
    assert result.exit_code == 0, result.output
    assert kind in result.output.splitlines()[0]


def test_an_unknown_kind_suggests_the_closest_one_in_one_line():
    result = runner.invoke(app, ["ls", "modles"])
    assert result.exit_code == 2
    assert result.output.strip() == ("simclip: error: nothing called 'modles' to list (did you mean 'models'?); "
                                     "choose one of models, datasets, attacks, objectives, protocols, tasks")


def test_shell_completion_offers_the_kinds_and_the_commands():
    script = Path(sys.executable).parent / "simclip"
    env = {**os.environ, "_SIMCLIP_COMPLETE": "complete_bash", "COMP_WORDS": "simclip ls ob", "COMP_CWORD": "2"}
    assert subprocess.run([str(script)], env=env, capture_output=True, text=True).stdout.split() == ["objectives"]
    env.update(COMP_WORDS="simclip lead", COMP_CWORD="1")
    assert subprocess.run([str(script)], env=env, capture_output=True, text=True).stdout.split() == ["leaderboard"]
