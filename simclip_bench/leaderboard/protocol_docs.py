"""What the leaderboard says about each protocol, and where it links.

A protocol's name in a column header or a task note links to a section of the page itself
(``#protocol-robustvlm``), which summarises the protocol and names the section of simclip-bench's
``docs/protocols.md`` that describes it field by field. In-page links resolve wherever the page is read
(a results folder copied anywhere, an artefact of a CI run); a relative link into the repository would
not. ``tests/test_showcase.py`` checks that every in-page link has its target and that every section
named exists in ``docs/protocols.md``.
"""
from __future__ import annotations

PROTOCOLS_DOC = "docs/protocols.md"

# protocol name as result rows store it -> (anchor, in the page and in docs/protocols.md; what it runs)
PROTOCOL_DOCS: dict[str, tuple[str, str]] = {
    "default": ("protocol-default", "APGD-CE, 100 iterations"),
    "robustvlm": ("protocol-robustvlm", "RobustVLM's zero-shot attack: APGD-CE (5 restarts), then APGD-T "
                                        "(9 targets), 100 iterations each"),
    "autoattack": ("protocol-autoattack", "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) through the "
                                          "reference code"),
    "ensemble": ("protocol-ensemble", "RobustVLM's captioning/VQA ensemble: one 100-iteration APGD per ground "
                                      "truth, a float32 run from the best point, and for VQA two targeted runs"),
    "fast": ("protocol-fast", "apgd-ce + MALT-targeted APGD-T, 50 iterations, audited against apgd-ce+apgd-t"),
}


def protocol_anchor(protocol: str) -> str | None:
    """The id of the protocol's section (in the rendered page and in ``docs/protocols.md``), or None."""
    doc = PROTOCOL_DOCS.get(protocol)
    return doc[0] if doc else None


def protocol_link(protocol: str) -> str | None:
    """The in-page link of ``protocol`` (``#protocol-…``), or None when it has no section."""
    anchor = protocol_anchor(protocol)
    return f"#{anchor}" if anchor else None


def protocol_summary(protocol: str) -> str:
    doc = PROTOCOL_DOCS.get(protocol)
    return doc[1] if doc else ""


def protocol_reference(protocol: str) -> str:
    """Where the protocol is described in full: ``docs/protocols.md#protocol-…`` of simclip-bench."""
    return f"{PROTOCOLS_DOC}#{protocol_anchor(protocol)}"
