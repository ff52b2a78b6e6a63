"""Read the result files a leaderboard is rendered from, and keep the latest row per measurement.

A measurement is a result row's full identity (:data:`~simclip_bench.results.identity.RESULT_KEY`: model and
what reads it, data, subset, setting, eps, metric): a re-run of the identical measurement replaces the
earlier row; a run of another setting or subset stands beside it, and the table gives it its own column
(:mod:`simclip_bench.leaderboard.table`). A results file written before identities existed lacks some of
the columns; they are read as empty.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from simclip_bench.errors import UserError
from simclip_bench.results.identity import RESULT_KEY, TEXT_COLUMNS
from simclip_bench.results.model_cards import ModelCard, read_cards
from simclip_bench.results.store import RESULTS_FILE

NEEDED = ("run_id", "created_at", "git_sha", "package_version", "model", "checkpoint_hash", "task", "dataset",
          "n_samples", "attack", "norm", "eps", "metric", "value", "ci_low", "ci_high", "flags")
# Read as empty where a results file predates them.
OPTIONAL_TEXT = ("text_hash", "vlm_hash", "data_id", "data_source", "subset_id", "split", "setting", "protocol",
                 "attack_config", "eps_text", "sample_seed", "n_requested")
# One measurement: re-running it writes a new row, and the latest one counts.
MEASUREMENT = list(RESULT_KEY)


def with_identity_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every optional text column (identities, settings) present: empty where it predates them."""
    missing = [c for c in OPTIONAL_TEXT if c not in table.columns]
    return table.assign(**dict.fromkeys(missing, "")) if missing else table


def check_results_dir(results_dir: Path) -> None:
    """A UserError unless ``results_dir`` is a folder; a file (``results.csv`` itself) gets the folder to pass."""
    results_dir = Path(results_dir)
    if results_dir.is_file():
        raise UserError(f"{results_dir} is a file; pass the folder that holds {RESULTS_FILE}: "
                        f"simclip leaderboard {results_dir.parent}")
    if not results_dir.is_dir():
        raise UserError(f"{results_dir} is not a directory; pass the --out directory of 'simclip eval' or "
                        "'simclip bench'")


def load_results(results_dir: Path) -> pd.DataFrame:
    """``results.csv`` of ``results_dir``, checked, typed, one row per measurement (the latest), in a stable order."""
    results_dir = Path(results_dir)
    path = results_dir / RESULTS_FILE
    check_results_dir(results_dir)
    if not path.is_file():
        raise UserError(f"no {RESULTS_FILE} in {results_dir}; write one with 'simclip eval --out {results_dir}'")
    try:
        table = pd.read_csv(path, dtype={c: str for c in (*TEXT_COLUMNS, "sample_seed", "n_requested")},
                            keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable CSV file: {str(e).splitlines()[0]}") from None
    missing = [c for c in NEEDED if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks the result columns {', '.join(missing)}; is it a simclip-bench results.csv?")
    if table.empty:
        raise UserError(f"{path} has no result rows; run 'simclip eval --out {results_dir}' first")
    table = with_identity_columns(table)
    for col in ("eps", "value", "ci_low", "ci_high", "n_samples"):
        table[col] = pd.to_numeric(table[col].replace("", float("nan")), errors="coerce")
    bad = table[table["value"].isna() | table["eps"].isna()]
    if len(bad):
        raise UserError(f"{path} row {int(bad.index[0]) + 2} has no numeric value or eps; fix or remove it")
    table = table.sort_values(["created_at", "run_id"], kind="mergesort")
    table = table.drop_duplicates(MEASUREMENT, keep="last")
    return table.sort_values([*MEASUREMENT, "eps"], kind="mergesort").reset_index(drop=True)


def load_cards(results_dir: Path) -> dict[tuple[str, str], ModelCard]:
    """The model cards saved beside the results; a broken cards file is an error, a missing one is not."""
    try:
        return read_cards(results_dir)
    except (ValueError, TypeError) as e:
        raise UserError(f"{Path(results_dir) / 'model_cards.json'} is not a valid cards file: {e}") from None
