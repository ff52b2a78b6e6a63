"""How a long job reports progress and notices without knowing who shows them, or whether anyone does.

The evaluation jobs (:mod:`simclip_bench.jobs.zeroshot_eval`, :mod:`simclip_bench.jobs.vlm_eval`) and
``simclip bench`` take a :class:`Reporter`. The CLI passes one that draws rich progress bars (plain lines now
and then when stderr is no terminal) and prints notices on stderr (:mod:`simclip_bench.cli.reporting`); a
library caller passes nothing and gets :data:`SILENT`, which does nothing. Texts are plain: a renderer
escapes what its format would read as markup.
"""
from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    """Notices for the user and progress lines, each with a label, a total and a short changing ``info``."""

    def notify(self, message: str) -> None:
        """A notice for the user (e.g. that only the built-in model is evaluated). Jobs send notices only once
        every input check has passed, so bad input still ends in exactly one error line."""

    def start(self, label: str, total: int, info: str = "") -> Any:
        """Open a progress line counting to ``total``; returns its handle for the calls below."""

    def advance(self, line: Any, amount: int = 1) -> None:
        """``amount`` more units of ``line`` are done."""

    def set_info(self, line: Any, info: str) -> None:
        """Replace the short text shown beside ``line`` (e.g. the attack run that just finished)."""

    def complete(self, line: Any) -> None:
        """All of ``line`` is done."""


class SilentReporter:
    """A :class:`Reporter` that shows nothing: the default of every job called as a library."""

    def notify(self, message: str) -> None:
        pass

    def start(self, label: str, total: int, info: str = "") -> None:
        return None

    def advance(self, line: Any, amount: int = 1) -> None:
        pass

    def set_info(self, line: Any, info: str) -> None:
        pass

    def complete(self, line: Any) -> None:
        pass


SILENT: Reporter = SilentReporter()
