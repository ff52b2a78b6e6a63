"""Progress as plain lines, for a log file: what the CLI shows instead of live bars when stderr is no terminal.

Under ``nohup``, in a Slurm log or behind a pipe a live bar cannot redraw, so rich shows nothing until the
job ends. :class:`PlainProgress` keeps rich's bookkeeping (tasks, speed, time remaining) but prints one
line per progress line when it starts, when it ends, in between whenever it moved and
``SIMCLIP_PROGRESS_SECONDS`` (default 30) have passed since its last line, and, while it runs, at least every
``SIMCLIP_PROGRESS_SECONDS`` even when it did not move (a timer thread), so that one long batch is never
silent. A line shows the attack phase when an attack reports one (:mod:`simclip_bench.attacks.progress`)::

    [14:02:11] tiny-clip shapes 500/1000 (50%) 3.1/s ETA 2m41s | apgd-ce clean 89.2%, 4/255 robust 10.4% (of 500)
    [14:02:41] tiny-clip shapes 500/1000 (50%) ETA 2m12s | ... | 4/255 apgd-ce+apgd-t: apgd-t target 3/7, \
iteration 40/100, 312 of 500 samples attacked

``SIMCLIP_PROGRESS_SECONDS=0`` prints a line at every step of the count instead, and no timer lines.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress, Task, TaskID

INTERVAL_ENV = "SIMCLIP_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def interval_seconds() -> float:
    """Seconds between two lines of one task: ``$SIMCLIP_PROGRESS_SECONDS``, default 30 (a bad value: 30)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def line_eta(task: Task) -> float | None:
    """Seconds left for a progress line: while an attack reports (the task's ``attack_status`` field), the rest of
    its batch (every run and setting left, :mod:`simclip_bench.attacks.progress`) plus the line's samples after
    that batch at the batch's own pace; else rich's estimate from the line's speed."""
    status = task.fields.get("attack_status")
    if task.finished or status is None or status.seconds_left is None:
        return task.time_remaining
    batch_left = max(status.seconds_left - (time.monotonic() - status.at), 0.0)
    batch = status.batch_samples or status.samples
    after = max((task.total or 0) - task.completed - batch, 0)
    if not after or not batch or status.batch_elapsed is None:
        return batch_left
    return batch_left + after * (status.batch_elapsed + status.seconds_left) / batch


def duration_text(seconds: float | None) -> str:
    """``2m41s``, ``1h05m``, ``7s``; ``?`` for an unknown time."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress(Progress):
    """A :class:`rich.progress.Progress` that never draws a live display and prints lines instead.

    ``on_first_task`` runs once, before the first line (the CLI's warning about a busy machine).
    """

    def __init__(self, console: Console, interval: float | None = None, on_first_task=None) -> None:
        super().__init__(console=console, auto_refresh=False, transient=False)
        self.interval = interval_seconds() if interval is None else interval
        self.on_first_task = on_first_task
        self._last: dict[TaskID, tuple[float, float]] = {}  # task -> (time of its last line, completed then)
        self._done: set[TaskID] = set()
        self._lines = threading.Lock()  # the timer thread and the job print lines
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:  # no live display: a timer that keeps a running line from going silent
        if self.interval > 0 and self._timer is None:
            self._timer = threading.Thread(target=self._every_interval, name="progress-lines", daemon=True)
            self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None

    def _every_interval(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            now = time.monotonic()
            for task in list(self.tasks):
                at, _ = self._last.get(task.id, (now, 0.0))
                if task.id not in self._done and not task.finished and now - at >= self.interval:
                    self._print(task.id)

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        if self.on_first_task is not None and not self._last:
            self.on_first_task()
        task = super().add_task(description, start=start, total=total, completed=completed, visible=visible,
                                **fields)
        self._print(task)
        return task

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._maybe_print(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_print(task_id)

    def _maybe_print(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if task_id in self._done:
            return
        if task.finished:
            self._done.add(task_id)
            self._print(task_id)
            return
        at, completed = self._last.get(task_id, (0.0, -1.0))
        if task.completed != completed and time.monotonic() - at >= self.interval:
            self._print(task_id)

    def _print(self, task_id: TaskID) -> None:
        with self._lines:
            task = self._tasks[task_id]
            self._last[task_id] = (time.monotonic(), task.completed)
            done = f"{task.completed:g}/{task.total:g}" if task.total else f"{task.completed:g}"
            percent = f" ({task.percentage:.0f}%)" if task.total else ""
            speed = task.finished_speed or task.speed
            rate = f" {speed:.3g}{' ' + task.fields['unit'] if task.fields.get('unit') else ''}/s" if speed else ""
            eta = "" if task.finished else f" ETA {duration_text(line_eta(task))}"
            notes = [note for note in (task.fields.get("info", ""), task.fields.get("phase", "")) if note]
            # description, info and phase are rich markup (the reporter escaped them); the time is no markup tag
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {task.description} {done}{percent}{rate}{eta}"
                               + "".join(f" | {note}" for note in notes), highlight=False, soft_wrap=True)
