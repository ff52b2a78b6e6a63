"""The CLI's :class:`~simclip_bench.progress.Reporter`: the jobs' progress lines as rich bars (as plain lines in a
log file: :mod:`simclip_bench.cli.plain_progress`), notices on stderr, and the phase of a running attack
(:mod:`simclip_bench.attacks.progress`) beside the line it works for."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from simclip_bench.attacks import progress as attack_progress
from simclip_bench.cli.app import console, progress_bar


class RichReporter:
    """Each progress line is a task of ``bar``; labels and infos are escaped (model ids such as
    ``tiny-vlm[runs/x]`` hold brackets, which rich would read as markup); notices go to ``notices``."""

    def __init__(self, bar: Progress, notices: Console = console) -> None:
        self.bar, self.notices = bar, notices
        self.working: TaskID | None = None  # the line the attacks work for: the last one started or advanced

    def notify(self, message: str) -> None:
        self.notices.print(message, markup=False, highlight=False, soft_wrap=True)  # plain text (module docstring)

    def start(self, label: str, total: int, info: str = "") -> TaskID:
        self.working = self.bar.add_task(escape(label), total=total, info=escape(info), phase="", attack_status=None)
        return self.working

    def advance(self, line: Any, amount: int = 1) -> None:
        self.working = line
        self.bar.update(line, phase="", attack_status=None)  # the batch the phase described is done
        self.bar.advance(line, amount)

    def attack_status(self, status: attack_progress.AttackStatus) -> None:
        """Shown beside the working line: called by the attacks at most once per iteration (an update of two
        fields; printing is the display's business)."""
        if self.working is not None:
            self.bar.update(self.working, phase=escape(status.describe()), attack_status=status)

    def set_info(self, line: Any, info: str) -> None:
        self.bar.update(line, info=escape(info))

    def complete(self, line: Any) -> None:
        self.bar.update(line, completed=self.bar.tasks[line].total)


@contextmanager
def rich_reporter() -> Iterator[RichReporter]:
    """A :class:`RichReporter` on the CLI's progress display (:func:`~simclip_bench.cli.app.progress_bar`), told
    where the attacks run inside it are."""
    with progress_bar() as bar:
        reporter = RichReporter(bar)
        with attack_progress.listening(reporter.attack_status):
            yield reporter
