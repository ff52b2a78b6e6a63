"""The leaderboard as Markdown (``LEADERBOARD.md``): one wide table, notes, and the model cards."""
from __future__ import annotations

from simclip_bench.leaderboard.table import Column, Entry, Leaderboard
from simclip_bench.results.model_cards import ModelCard


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: no pipes, no HTML, no emphasis or link syntax, one line."""
    text = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def cell_text(lb: Leaderboard, entry: Entry, col: Column) -> str:
    """A cell as the tables print it: the scaled headline, '†' when fewer datasets than the task has, or '–'."""
    cell = entry.cells.get(col)
    if cell is None:
        return "–"
    dagger = "†" if cell.datasets != lb.datasets[col.task] else ""
    return lb.headlines[col.task].show(cell.value) + dagger


def _header(lb: Leaderboard) -> list[str]:
    multi = len(lb.tasks) > 1
    return ["#", "model"] + [f"{c.task} {c.label}" if multi else c.label for c in lb.columns] + ["flags"]


def _flags_text(entry: Entry) -> str:
    flags = [f"{t}: {f}" if len(entry.flags) > 1 else f for t, fs in entry.flags.items() for f in fs]
    return "; ".join(md_escape(f) for f in flags) or ""


def _card_md(card: ModelCard) -> list[str]:
    fields = card.display_fields()
    lines = [f'<a id="card-{card.slug}"></a>', f"### {md_escape(card.name)}", ""]
    lines += [f"* {k}: {md_escape(v)}" for k, v in fields if v]
    return lines + [""]


def render_markdown(lb: Leaderboard) -> str:
    """The whole ``LEADERBOARD.md`` text (deterministic: no clock, stable order, fixed number formats)."""
    out = ["# Leaderboard", "",
           "Rendered by `simclip leaderboard` from `results.csv` and `model_cards.json`; do not edit by hand.", ""]
    for task in lb.tasks:
        h = lb.headlines[task]
        attacks = ", ".join(lb.attacks[task]) or "none"
        note = f" {md_escape(lb.vlm_note(task))}" if lb.vlm_note(task) else ""
        out.append(f"* **{md_escape(task)}**{note}: {md_escape(h.label)}"
                   f"{f' ({h.unit})' if h.unit else ''}, mean over "
                   f"datasets {md_escape(', '.join(lb.datasets[task]))}; robust columns are the worst case over "
                   f"the attacks {md_escape(attacks)} (ℓ∞ unless named).")
    out += ["", "| " + " | ".join(_header(lb)) + " |",
            "|" + "|".join(["---:", "---"] + ["---:"] * len(lb.columns) + ["---"]) + "|"]
    for rank, e in enumerate(lb.entries, 1):
        name = f"[{md_escape(e.name)}](#card-{e.slug})" if e.card else md_escape(e.name)
        cells = [cell_text(lb, e, c) for c in lb.columns]
        out.append("| " + " | ".join([str(rank), name, *cells, _flags_text(e)]) + " |")
    out.append("")
    if any("†" in cell_text(lb, e, c) for e in lb.entries for c in lb.columns):
        out += ["† mean over fewer datasets than the task has in this table: not comparable with the others.", ""]
    if lb.skipped_tasks:
        out += [f"Not shown (no headline metric declared in simclip_bench/leaderboard/headline.py): "
                f"{md_escape(', '.join(lb.skipped_tasks))}.", ""]
    out += ["Evaluations: " + ", ".join(f"{k} {md_escape(' '.join(v))}" for k, v in lb.provenance.items()) + ".", ""]
    cards = [e.card for e in lb.entries if e.card]
    if cards:
        out += ["## Model cards", ""]
        for card in cards:
            out += _card_md(card)
    return "\n".join(out).rstrip("\n") + "\n"
