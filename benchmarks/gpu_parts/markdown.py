"""The small pieces of ``gpu_check.md``: Markdown tables and number formats."""
from __future__ import annotations


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def num(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("" if c is None else str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out
