"""The leaderboard as Markdown (``LEADERBOARD.md``): one wide table, notes, and the model cards."""
from __future__ import annotations

import math

from simclip_bench.leaderboard.price import prices
from simclip_bench.leaderboard.protocol_docs import protocol_anchor, protocol_link, protocol_reference, protocol_summary
from simclip_bench.leaderboard.published import QUOTED_TABLES, QuotedTable
from simclip_bench.leaderboard.table import Column, Entry, Leaderboard, eps_label
from simclip_bench.results.model_cards import ModelCard


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: no pipes, no HTML, no emphasis or link syntax, one line."""
    text = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def interval_text(lb: Leaderboard, entry: Entry, col: Column) -> str:
    """The cell's 95 % interval as ``68.5–76.4`` (displayed units), or empty (no cell, or several datasets)."""
    cell = entry.cells.get(col)
    if cell is None or math.isnan(cell.ci_low):
        return ""
    h = lb.headlines[col.task]
    return f"{h.show(cell.ci_low)}–{h.show(cell.ci_high)}"


def sample_counts(lb: Leaderboard, task: str) -> str:
    """``n = 200 samples per cell`` (or the distinct counts) for the task's cells."""
    counts = sorted({cell.n_samples for e in lb.entries for c in lb.columns_of(task) if (cell := e.cells.get(c))})
    return f"n = {', '.join(str(n) for n in counts)} samples per cell" if counts else "no samples"


def cell_text(lb: Leaderboard, entry: Entry, col: Column) -> str:
    """A cell as the tables print it: the scaled headline, '†' when fewer datasets than the task has, or '–'."""
    cell = entry.cells.get(col)
    if cell is None:
        return "–"
    dagger = "†" if cell.datasets != lb.datasets[col.task] else ""
    return lb.headlines[col.task].show(cell.value) + dagger


def _header(lb: Leaderboard) -> list[str]:
    multi = len(lb.tasks) > 1
    return ["#", "model"] + [md_escape(f"{c.task} {c.label}" if multi else c.label) for c in lb.columns] + ["flags"]


def _protocols_md(lb: Leaderboard, task: str) -> str:
    parts = []
    for protocol in lb.protocols_of(task):
        link, summary = protocol_link(protocol), protocol_summary(protocol)
        name = f"[{md_escape(protocol)}]({link})" if link else md_escape(protocol)
        parts.append(f"{name} ({md_escape(summary)})" if summary else name)
    return "; ".join(parts)


def _protocol_sections_md(lb: Leaderboard) -> list[str]:
    """One short section per linked protocol, the target of the links in the headers and notes."""
    protocols = sorted({p for t in lb.tasks for p in lb.protocols_of(t) if protocol_anchor(p)})
    if not protocols:
        return []
    out = ["## Protocols", ""]
    for p in protocols:
        out += [f'<a id="{protocol_anchor(p)}"></a>', "",
                f"* **{md_escape(p)}**: {md_escape(protocol_summary(p))}. Field by field, beside its reference: "
                f"simclip-bench's `{protocol_reference(p)}`.", ""]
    return out


def _price_md(lb: Leaderboard) -> list[str]:
    rows = prices(lb)
    if not rows:
        return []
    out = ["## The price of robustness", "",
           "Per fine-tuned model against the model it was fine-tuned from: clean score lost, robust score gained "
           "(worst case over the protocols), and the clean points paid per robust point (0 when clean did not "
           "drop; – when robustness did not rise).", "",
           "| model | task | ε | clean lost | robust gained | clean per robust point |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = r.clean_per_robust_point
        out.append(f"| {md_escape(r.entry.name)} | {md_escape(r.task_label)} | {eps_label(r.eps)} | "
                   f"{r.clean_drop:+.1f} | {r.robust_gain:+.1f} | {'–' if math.isnan(ratio) else f'{ratio:.2f}'} |")
    return out + [""]


def _quoted_md(table: QuotedTable) -> list[str]:
    out = [f"### {md_escape(table.title)}", "", f"Source: <{table.source}>. Attack: {md_escape(table.attack)}"
           + (f" {md_escape(table.note)}" if table.note else ""), "",
           "| " + " | ".join(md_escape(c) for c in table.columns) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(table.columns) - 1)) + "|"]
    out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table.rows]
    return out + [""]


def quoted_section_md() -> list[str]:
    """The published numbers, apart from everything measured here."""
    out = ["## Published numbers (quoted, not re-measured)", "",
           "As the papers and repositories published them, with the attack each used. Different models, data, "
           "attacks and sample counts from the measured table above: never compare across the two.", ""]
    for table in QUOTED_TABLES:
        out += _quoted_md(table)
    return out


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
        protocols = _protocols_md(lb, task)
        out.append(f"* **{md_escape(task)}**{note}: {md_escape(h.label)}"
                   f"{f' ({h.unit})' if h.unit else ''}, mean over "
                   f"datasets {md_escape(', '.join(lb.datasets[task]))}; robust columns are the worst case over "
                   f"the attacks {md_escape(attacks)} (ℓ∞ unless named)"
                   + (f"; protocol{'s' * (len(lb.protocols_of(task)) > 1)} {protocols}" if protocols else "")
                   + f"; {md_escape(sample_counts(lb, task))}.")
    if any(interval_text(lb, e, c) for e in lb.entries for c in lb.columns):
        out.append("* In brackets: the 95 % interval of each cell, as its result rows give it "
                   "(simclip-bench's docs/results.md, 'Intervals').")
    out += ["", "| " + " | ".join(_header(lb)) + " |",
            "|" + "|".join(["---:", "---"] + ["---:"] * len(lb.columns) + ["---"]) + "|"]
    for rank, e in enumerate(lb.entries, 1):
        name = f"[{md_escape(e.name)}](#card-{e.slug})" if e.card else md_escape(e.name)
        cells = [cell_text(lb, e, c) + (f" ({iv})" if (iv := interval_text(lb, e, c)) else "") for c in lb.columns]
        out.append("| " + " | ".join([str(rank), name, *cells, _flags_text(e)]) + " |")
    out.append("")
    if any("†" in cell_text(lb, e, c) for e in lb.entries for c in lb.columns):
        out += ["† mean over fewer datasets than the task has in this table: not comparable with the others.", ""]
    if lb.skipped_tasks:
        out += [f"Not shown (no headline metric declared in simclip_bench/leaderboard/headline.py): "
                f"{md_escape(', '.join(lb.skipped_tasks))}.", ""]
    out += ["Evaluations: " + ", ".join(f"{k} {md_escape(' '.join(v))}" for k, v in lb.provenance.items()) + ".", ""]
    out += _protocol_sections_md(lb)
    out += _price_md(lb)
    out += quoted_section_md()
    cards = [e.card for e in lb.entries if e.card]
    if cards:
        out += ["## Model cards", ""]
        for card in cards:
            out += _card_md(card)
    return "\n".join(out).rstrip("\n") + "\n"
