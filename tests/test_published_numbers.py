"""Specification of the quoted published numbers (simclip_bench.leaderboard.published): shape and spot checks.

No network: the spot-check values below were read from the sources named in each table (2026-11-30),
so that a mistyped edit of a quoted cell fails here.
"""
from __future__ import annotations

import dataclasses

import pytest

from simclip_bench.leaderboard.published import QUOTED_TABLES, QuotedTable


def _table(key: str) -> QuotedTable:
    matches = [t for t in QUOTED_TABLES if t.key == key]
    assert len(matches) == 1, f"expected exactly one table {key!r}"
    return matches[0]


def _cell(key: str, model: str, column: str, *, second: str | None = None) -> str:
    """The cell of ``column`` in the row whose first cell is ``model`` (and second cell ``second``, if given)."""
    table = _table(key)
    rows = [r for r in table.rows if r[0] == model and (second is None or r[1] == second)]
    assert len(rows) == 1, f"expected one row {model!r}/{second!r} in {key!r}"
    return rows[0][table.columns.index(column)]


def test_keys_are_unique_and_nonempty():
    keys = [t.key for t in QUOTED_TABLES]
    assert all(keys)
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("table", QUOTED_TABLES, ids=lambda t: t.key)
def test_every_table_is_sourced_and_well_formed(table: QuotedTable):
    assert table.source.startswith("https://")
    assert table.attack.strip()
    assert table.title.strip()
    assert len(table.columns) >= 2
    assert len(set(table.columns)) == len(table.columns)
    assert table.rows
    for row in table.rows:
        assert len(row) == len(table.columns), row
        assert all(isinstance(cell, str) and cell.strip() for cell in row), row


def test_tables_are_frozen_tuples():
    assert isinstance(QUOTED_TABLES, tuple)
    table = QUOTED_TABLES[0]
    assert isinstance(table.columns, tuple)
    assert all(isinstance(row, tuple) for row in table.rows)
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.key = "changed"  # type: ignore[misc]


def test_robustvlm_vitl14_is_present_with_fare_and_tecoa_at_both_radii():
    table = _table("robustvlm-vitl14")
    assert "github.com/chs20/RobustVLM" in table.source
    models = [row[0] for row in table.rows]
    assert models == ["OpenAI", "TeCoA²", "FARE²", "TeCoA⁴", "FARE⁴"]
    for setting in ("clean", "2/255", "4/255"):
        for task in ("Zero-shot avg", "OpenFlamingo 9B COCO", "LLaVA 1.5 7B TextVQA"):
            assert f"{task}, {setting}" in table.columns
    assert "APGD-CE" in table.attack and "APGD-T" in table.attack and "100" in table.attack


@pytest.mark.parametrize(
    ("model", "column", "published"),
    [
        ("OpenAI", "Zero-shot avg, clean", "73.1"),
        ("OpenAI", "LLaVA 1.5 7B COCO, clean", "115.5"),
        ("FARE²", "Zero-shot avg, 2/255", "43.1"),
        ("FARE⁴", "LLaVA 1.5 7B COCO, 4/255", "40.9"),
        ("TeCoA²", "OpenFlamingo 9B COCO, 2/255", "31.6"),
        ("TeCoA⁴", "Zero-shot avg, 4/255", "31.9"),
        ("FARE²", "OpenFlamingo 9B TextVQA, 4/255", "1.9"),
        ("OpenAI", "LLaVA 1.5 7B TextVQA, 4/255", "0.0"),
    ],
)
def test_robustvlm_vitl14_spot_checks(model: str, column: str, published: str):
    assert _cell("robustvlm-vitl14", model, column) == published


def test_robustvlm_base_spot_checks():
    assert _cell("robustvlm-base", "FARE¹", "Adv. 4/255", second="ViT-B/32 OpenAI") == "2.9"
    assert _cell("robustvlm-base", "TeCoA⁴", "Clean", second="ConvNeXt-B LAION 2B") == "56.2"


def test_simclip_spot_checks():
    assert _cell("simclip-readme", "Sim-CLIP-4", "COCO, 4/255", second="LLaVA 1.5") == "72.9"
    assert _cell("simclip-readme", "FARE-2", "Flickr30k, clean", second="Open Flamingo") == "53.1"
    # the source prints this cell without a decimal, its LLaVA counterpart with one
    assert _cell("simclip-readme", "CLIP", "OKVQA, 4/255", second="Open Flamingo") == "0"
    assert _cell("simclip-readme", "CLIP", "OKVQA, 4/255", second="LLaVA 1.5") == "0.0"


def test_tga_zsr_spot_checks():
    assert _cell("tga-zsr-readme", "TGA-ZSR (Ours)", "Robust") == "42.09"
    assert _cell("tga-zsr-readme", "FARE", "Clean") == "59.85"
    assert _cell("tga-zsr-readme", "PMG-AFT", "Average") == "39.55"


def test_cells_are_copied_not_reformatted():
    """Trailing zeros survive: a cell is the published string, never a re-rendered float."""
    assert _cell("robustvlm-vitl14", "TeCoA²", "Zero-shot avg, clean") == "60.0"
    assert _cell("tga-zsr-readme", "CLIP", "Robust") == "4.90"
