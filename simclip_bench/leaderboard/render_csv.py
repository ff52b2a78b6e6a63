"""The leaderboard as CSV (``leaderboard.csv``): the Markdown table's numbers, unscaled, fixed formatting."""
from __future__ import annotations

import csv
import io

from simclip_bench.leaderboard.table import Leaderboard


def render_csv(lb: Leaderboard) -> str:
    """One row per model in leaderboard order; one column per task and eps (``task:label``) plus flags per task."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "name", "model", "checkpoint_sha256", "metric_of_task"]
                    + [f"{c.task}:{c.label}" for c in lb.columns] + [f"{t}:flags" for t in lb.tasks])
    metrics = ";".join(f"{t}={lb.headlines[t].metric}" for t in lb.tasks)
    for rank, e in enumerate(lb.entries, 1):
        values = [f"{e.cells[c].value:.4f}" if c in e.cells else "" for c in lb.columns]
        writer.writerow([rank, e.name, e.model, e.checkpoint_hash, metrics, *values,
                         *[";".join(e.flags.get(t, ())) for t in lb.tasks]])
    return buf.getvalue()
