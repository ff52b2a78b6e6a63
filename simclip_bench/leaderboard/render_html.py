"""The leaderboard as one self-contained HTML page (``leaderboard.html``).

Sortable by any column (click a header; a little inline script, no external files), every string
that came from a user (model names, specs, datasets, flags, card fields) escaped, masking-check
flags shown in red, each model linked to its card further down the page, and the plots embedded.
"""
from __future__ import annotations

import base64
import math
from html import escape

from simclip_bench.leaderboard.price import prices
from simclip_bench.leaderboard.protocol_docs import protocol_anchor, protocol_link, protocol_reference, protocol_summary
from simclip_bench.leaderboard.published import QUOTED_TABLES, QuotedTable
from simclip_bench.leaderboard.render_md import cell_text, interval_text, sample_counts
from simclip_bench.leaderboard.table import Column, Entry, Leaderboard, eps_label
from simclip_bench.results.model_cards import ModelCard

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:90rem;padding:0 1rem;
color:#1d1d1f}
table{border-collapse:collapse;margin:1rem 0}
th,td{border-bottom:1px solid #ddd;padding:.35rem .7rem;text-align:right;vertical-align:top}
th{background:#f4f4f6;white-space:nowrap}
th.sortable{cursor:pointer;user-select:none}
th.sortable::after{content:" \\2195";color:#aaa}
th[aria-sort=ascending]::after{content:" \\25B2";color:#333}
th[aria-sort=descending]::after{content:" \\25BC";color:#333}
td.name,th.name,td.flags,th.flags{text-align:left}
td.name small{color:#777;display:block;font-size:.75rem;overflow-wrap:anywhere}
#leaderboard td.name{min-width:14rem}
.scroll{overflow-x:auto}
.flag{background:#fde8e8;border:1px solid #e0a0a0;border-radius:3px;color:#b00020;display:inline-block;
font-size:.8rem;margin:1px;padding:0 .3rem}
.card{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.card dt{color:#555;float:left;width:11rem}.card dd{margin-left:11.5rem;overflow-wrap:anywhere}
img{max-width:100%}
td small.ci{color:#777;display:block;font-size:.7rem;white-space:nowrap}
th small{display:block;font-weight:normal}
section.quoted{background:#fafaf4;border:2px dashed #c9b458;border-radius:6px;margin:2rem 0;padding:0 1rem}
section.quoted table td{text-align:right}section.quoted table td:first-child{text-align:left}
"""

_SORT_JS = """
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  var heads = table.querySelectorAll("th.sortable");
  heads.forEach(function (th) {
    th.addEventListener("click", function (event) {
      if (event.target.closest("a")) return;  // a protocol link in the header follows the link
      var col = Number(th.dataset.col), numeric = th.dataset.type === "num";
      var dir = th.getAttribute("aria-sort") === (numeric ? "descending" : "ascending")
        ? (numeric ? "ascending" : "descending") : (numeric ? "descending" : "ascending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" && y === "") return 0;
        if (x === "") return 1;
        if (y === "") return -1;
        var c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
        return dir === "ascending" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
    });
  });
});
"""


def _num(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def _cell_td(lb: Leaderboard, entry: Entry, col: Column) -> str:
    cell = entry.cells.get(col)
    if cell is None:
        return '<td data-sort="">–</td>'
    h = lb.headlines[col.task]
    ci = "" if math.isnan(cell.ci_low) else f", 95% CI {h.show(cell.ci_low)}–{h.show(cell.ci_high)}"
    title = (f"{h.label}{ci}; n={cell.n_samples}; datasets {', '.join(cell.datasets)}"
             + (f"; worst case over {', '.join(cell.attacks)}" if not col.is_clean else ""))
    interval = interval_text(lb, entry, col)
    small = f'<small class="ci">{escape(interval)}</small>' if interval else ""
    return (f'<td data-sort="{_num(cell.value)}" title="{escape(title)}">{escape(cell_text(lb, entry, col))}'
            f'{small}</td>')


def _protocol_html(protocol: str) -> str:
    link, summary = protocol_link(protocol), protocol_summary(protocol)
    title = f' title="{escape(summary)}"' if summary else ""
    return f'<a href="{escape(link)}"{title}>{escape(protocol)}</a>' if link else escape(protocol)


def _head_label(col: Column) -> str:
    """The column's eps and, for a robust column, its protocol (linked to its section of the page)."""
    if col.is_clean or not col.protocol:
        return escape(col.label)
    return f"{escape(eps_label(col.eps, col.norm))}<small>{_protocol_html(col.protocol)}</small>"


def _row(lb: Leaderboard, rank: int, entry: Entry) -> str:
    name = escape(entry.name)
    link = f'<a href="#card-{escape(entry.slug)}">{name}</a>' if entry.card else name
    spec = f"<small>{escape(entry.model)}</small>" if entry.model != entry.name else ""
    flags = "".join(f'<span class="flag">{escape(f"{t}: {f}" if len(entry.flags) > 1 else f)}</span>'
                    for t, fs in entry.flags.items() for f in fs)
    n_flags = sum(len(fs) for fs in entry.flags.values())
    cells = "".join(_cell_td(lb, entry, c) for c in lb.columns)
    return (f'<tr><td data-sort="{rank}">{rank}</td><td class="name" data-sort="{escape(entry.name.lower())}">'
            f'{link}{spec}</td>{cells}<td class="flags" data-sort="{n_flags}">{flags}</td></tr>')


def _table(lb: Leaderboard) -> str:
    groups = "".join(f'<th colspan="{len(lb.columns_of(t))}">{escape(t)}: {escape(lb.headlines[t].label)}'
                     f'{escape(f" ({lb.headlines[t].unit})" if lb.headlines[t].unit else "")}</th>'
                     for t in lb.tasks)
    heads = ['<th class="sortable" data-col="0" data-type="num" aria-sort="ascending">#</th>',
             '<th class="sortable name" data-col="1" data-type="text">model</th>']
    heads += [f'<th class="sortable" data-col="{i + 2}" data-type="num" data-task="{escape(c.task)}" '
              f'data-protocol="{escape(c.protocol)}">{_head_label(c)}</th>' for i, c in enumerate(lb.columns)]
    heads.append(f'<th class="sortable flags" data-col="{len(lb.columns) + 2}" data-type="num">flags</th>')
    body = "\n".join(_row(lb, rank, e) for rank, e in enumerate(lb.entries, 1))
    return (f'<table class="leaderboard" id="leaderboard"><thead><tr><th colspan="2"></th>{groups}<th></th></tr>'
            f'<tr>{"".join(heads)}</tr></thead>\n<tbody>\n{body}\n</tbody></table>')


def _card(card: ModelCard) -> str:
    fields = card.display_fields()
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in fields if v)
    return f'<article class="card" id="card-{escape(card.slug)}"><h3>{escape(card.name)}</h3><dl>{items}</dl></article>'


def _price_html(lb: Leaderboard) -> str:
    rows = prices(lb)
    if not rows:
        return ""
    body = "".join(f"<tr><td class=\"name\">{escape(r.entry.name)}</td><td class=\"name\">{escape(r.task_label)}</td>"
                   f"<td>{escape(eps_label(r.eps))}</td><td>{r.clean_drop:+.1f}</td><td>{r.robust_gain:+.1f}</td>"
                   f"<td>{'–' if math.isnan(r.clean_per_robust_point) else f'{r.clean_per_robust_point:.2f}'}</td></tr>"
                   for r in rows)
    return ("<h2>The price of robustness</h2>\n<p>Per fine-tuned model against the model it was fine-tuned from: "
            "clean score lost, robust score gained (worst case over the protocols), and the clean points paid per "
            "robust point (0 when clean did not drop; – when robustness did not rise). The frontier plots below "
            "show the same trade.</p>\n"
            '<table class="price"><thead><tr><th class="name">model</th><th class="name">task</th><th>ε</th>'
            "<th>clean lost</th><th>robust gained</th><th>clean per robust point</th></tr></thead>"
            f"<tbody>{body}</tbody></table>\n")


def _quoted_table(table: QuotedTable) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    note = f" {escape(table.note)}" if table.note else ""
    return (f'<h3 id="quoted-{escape(table.key)}">{escape(table.title)}</h3>'
            f'<p>Source: <a href="{escape(table.source)}">{escape(table.source)}</a>. '
            f"Attack: {escape(table.attack)}{note}</p>"
            f'<div class="scroll"><table class="quoted"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            "</div>")


def quoted_section_html() -> str:
    """The published numbers in a section of their own, marked as quoted, never among the measured rows."""
    tables = "".join(_quoted_table(t) for t in QUOTED_TABLES)
    return ('<section class="quoted" id="published"><h2>Published numbers: quoted, not re-measured</h2>'
            "<p>As the papers and repositories published them, with the attack each used. Different models, data, "
            "attacks and sample counts from the measured table above: never compare across the two.</p>"
            f"{tables}</section>\n")


def _protocols_html(lb: Leaderboard) -> str:
    """One short section per linked protocol, the target of the links in the headers and notes."""
    protocols = sorted({p for t in lb.tasks for p in lb.protocols_of(t) if protocol_anchor(p)})
    if not protocols:
        return ""
    items = "".join(f'<li id="{escape(protocol_anchor(p))}"><b>{escape(p)}</b>: {escape(protocol_summary(p))}. '
                    f"Field by field, beside its reference: simclip-bench's <code>{escape(protocol_reference(p))}"
                    "</code>.</li>" for p in protocols)
    return f"<h2>Protocols</h2>\n<ul class=\"protocols\">{items}</ul>\n"


def render_html(lb: Leaderboard, plots: dict[str, bytes]) -> str:
    """The whole page; ``plots`` (name -> PNG bytes) are embedded as data URIs, in name order."""
    notes = "".join(f"<li><b>{escape(t)}</b>{' ' * bool(lb.vlm_note(t))}{escape(lb.vlm_note(t))}: "
                    f"{escape(lb.headlines[t].label)}, "
                    "mean over datasets "
                    f"{escape(', '.join(lb.datasets[t]))}; robust columns are the worst case over "
                    f"{escape(', '.join(lb.attacks[t]) or 'no attack')} (ℓ∞ unless named)"
                    + (f"; protocol{'s' * (len(lb.protocols_of(t)) > 1)} "
                       + "; ".join(_protocol_html(p) + (f" ({escape(protocol_summary(p))})" if protocol_summary(p)
                                                        else "") for p in lb.protocols_of(t))
                       if lb.protocols_of(t) else "")
                    + f"; {escape(sample_counts(lb, t))}.</li>" for t in lb.tasks)
    if any(interval_text(lb, e, c) for e in lb.entries for c in lb.columns):
        notes += "<li>Under each score: its 95 % interval, as its result rows give it.</li>"
    if lb.skipped_tasks:
        notes += f"<li>Not shown (no headline metric declared): {escape(', '.join(lb.skipped_tasks))}.</li>"
    notes += "<li>Evaluations: " + "; ".join(f"{escape(k)} {escape(' '.join(v))}"
                                             for k, v in lb.provenance.items()) + ".</li>"
    if any("†" in cell_text(lb, e, c) for e in lb.entries for c in lb.columns):
        notes += "<li>† mean over fewer datasets than the task has in this table: not comparable.</li>"
    images = "".join(f'<figure><img alt="{escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(data).decode()}"><figcaption>{escape(name)}</figcaption></figure>'
                     for name, data in sorted(plots.items()))
    cards = "".join(_card(e.card) for e in lb.entries if e.card)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>simclip-bench leaderboard</title><style>{_CSS}</style></head><body>\n"
            "<h1>simclip-bench leaderboard</h1>\n"
            "<p>Rendered by <code>simclip leaderboard</code> from result files only. Click a column header to "
            "sort. Hover a score for its interval, sample count and attacks.</p>\n"
            f"{_table(lb)}\n<ul class=\"notes\">{notes}</ul>\n{_protocols_html(lb)}{_price_html(lb)}"
            f"<h2>Plots</h2>\n{images}\n"
            f"{quoted_section_html()}"
            f"<h2>Model cards</h2>\n{cards or '<p>No model cards in the results directory.</p>'}\n"
            f"<script>{_SORT_JS}</script>\n</body></html>\n")
