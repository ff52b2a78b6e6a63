"""Result files written by hand for leaderboard tests: the leaderboard reads files, so files are the input."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simclip_bench.results.schema import RESULT_COLUMNS

HASH_A = "a" * 64
HASH_B = "b" * 64


def row(model: str = "tiny-clip", eps: float = 0.0, value: float = 0.9, attack: str | None = None,
        checkpoint_hash: str = HASH_A, task: str = "zeroshot", metric: str = "accuracy", dataset: str = "shapes",
        flags: str = "", created_at: str = "2026-01-01T00:00:00+00:00", run_id: str = "run-1") -> dict:
    """One tidy result row; eps 0 is the clean row (attack 'none')."""
    k = round(eps * 255)
    base = {c: "" for c in RESULT_COLUMNS}
    base.update(run_id=run_id, created_at=created_at, git_sha="0" * 40, package_version="0.1.0", model=model,
                checkpoint_hash=checkpoint_hash, task=task, dataset=dataset, split="test", n_samples=200,
                sample_seed=0, attack=attack or ("none" if eps == 0 else "apgd-ce"), attack_config="{}",
                norm="" if eps == 0 else "linf", eps=eps, eps_text="0" if eps == 0 else f"{k}/255", metric=metric,
                value=value, ci_low=max(0.0, value - 0.05), ci_high=min(1.0, value + 0.05), seconds=1.5,
                device="cpu", flags=flags)
    return base


def model_rows(model: str, clean: float, at2: float, at4: float, **kw) -> list[dict]:
    """Clean, 2/255 and 4/255 rows of one model."""
    return [row(model, 0.0, clean, **kw), row(model, 2 / 255, at2, **kw), row(model, 4 / 255, at4, **kw)]


def write_results(directory: Path, rows: list[dict], cards: list[dict] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(directory / "results.csv", index=False)
    if cards is not None:
        (directory / "model_cards.json").write_text(json.dumps(cards))
    return directory


def two_models(directory: Path) -> Path:
    """A base model that collapses under attack and a robust one whose 4/255 row carries a masking flag."""
    rows = model_rows("tiny-clip", 0.90, 0.40, 0.10)
    rows += model_rows("runs/robust", 0.85, 0.60, 0.45, checkpoint_hash=HASH_B)
    rows[-1]["flags"] = "zero-gradients(3/200)"
    return write_results(directory, rows)
