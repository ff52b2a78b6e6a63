"""Where the leaderboard's protocol names link to: the README section that describes each protocol.

The rendered pages live in a folder at the repository root (``results/``), so the links are relative to
it. A protocol without an entry here is shown by name, unlinked. ``tests/test_showcase.py`` checks that
every anchor exists in the README.
"""
from __future__ import annotations

README_FROM_RESULTS = "../README.md"

# protocol name as result rows store it -> (README anchor, what it runs, in a few words)
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


def protocol_link(protocol: str) -> str | None:
    """The README link of ``protocol`` relative to the rendered page, or None when it has none."""
    doc = PROTOCOL_DOCS.get(protocol)
    return f"{README_FROM_RESULTS}#{doc[0]}" if doc else None


def protocol_summary(protocol: str) -> str:
    doc = PROTOCOL_DOCS.get(protocol)
    return doc[1] if doc else ""
