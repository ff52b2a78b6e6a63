"""Where a running attack is, for whoever shows progress: which attack, which target or restart, iteration k of
n, how many samples it still attacks, and an estimate of the time the work left will take.

Three levels report, each with one call where it already loops:

* a task's batch (:func:`batch`): its samples and the attacked settings it evaluates on them, in order
  (``2/255``, ``4/255``), and which of them runs now (:func:`setting`);
* an attack ensemble (:func:`plan`, :func:`run`, :func:`finished`): its runs in order (APGD-CE, then APGD-T
  towards each target, ...) with their iterations, and which one runs now on how many samples;
* the attack itself (:func:`stream`, :func:`advanced`): APGD once per refill, Square once per query round,
  with numbers that are already on the host (tensor shapes, Python counters), so reporting never makes the
  host wait for the GPU.

The estimate counts work in sample-iterations: the rate is measured over the current setting, and the work
left is the current run's samples times its iterations left, the later runs of the plan on the samples still
attacked now (an upper bound: some will be fooled first), and each setting left in the batch as long as this
one. The CLI listens (:func:`listening`); without a listener every call returns at once.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from simclip_bench.attacks.registry import AttackSpec, EnsembleSpec


@dataclass(frozen=True)
class AttackStatus:
    """One report: ``setting`` (e.g. ``4/255``; empty when no task said), ``attack`` the run (``apgd-t target
    3/9``), ``restart`` (``restart 2/5``, or empty), ``iteration`` of ``n_iter`` (per restart), ``running``
    samples still attacked of the run's ``samples``, ``seconds_left`` for the rest of the batch (None until a
    rate is measured), the batch's ``batch_samples`` and ``batch_elapsed`` seconds (None when no task said),
    and ``at`` (``time.monotonic()``)."""

    setting: str
    attack: str
    restart: str
    iteration: int
    n_iter: int
    running: int
    samples: int
    seconds_left: float | None
    batch_samples: int | None
    batch_elapsed: float | None
    at: float

    def describe(self) -> str:
        """``4/255: apgd-t target 3/9, iteration 40/100, 312 of 500 samples attacked``."""
        head = f"{self.setting}: {self.attack}" if self.setting else self.attack
        where = ", ".join(part for part in (self.restart, f"iteration {self.iteration}/{self.n_iter}") if part)
        return f"{head}, {where}, {self.running} of {self.samples} samples attacked"


@dataclass(eq=False)  # runs are told apart by identity: two may carry the same fields
class _Run:
    label: str
    iterations: int  # planned, every restart together
    samples: int = 0
    entered: int = 0  # samples whose first stream has started
    restart: int = 0
    restarts: int = 1
    iteration: int = 0  # in the current stream
    in_stream: int = 0
    queued: int = 0


@dataclass
class _Tracker:
    listener: Callable[[AttackStatus], None]
    batch_samples: int | None = None
    batch_started: float | None = None
    settings: tuple[str, ...] = ()
    setting: str = ""
    setting_index: int = -1  # in settings; -1: none of them
    setting_started: float = field(default_factory=time.monotonic)
    work: float = 0.0  # sample-iterations done in the current setting
    runs: list[_Run] = field(default_factory=list)
    current: _Run | None = None

    def seconds_left(self, now: float) -> float | None:
        run = self.current
        if run is None or self.work <= 0:
            return None
        per_restart = max(run.iterations // max(run.restarts, 1), 1)
        left_in_stream = per_restart - run.iteration if run.iteration < per_restart else per_restart / 2
        later_restarts = (run.restarts - run.restart - 1) * per_restart
        units = run.in_stream * (left_in_stream + later_restarts) + run.queued * run.iterations
        units += max(run.samples - run.entered, 0) * run.iterations
        after = self.runs[self.runs.index(run) + 1:] if run in self.runs else []
        units += sum(r.iterations for r in after) * self.running()
        spent = now - self.setting_started
        left = units * spent / self.work
        if self.setting_index >= 0:  # the settings after this one, each as long as this one
            left += (len(self.settings) - self.setting_index - 1) * (spent + left)
        return left

    def running(self) -> int:
        """Samples the current run still attacks: in its stream, queued for it, and not yet entered."""
        run = self.current
        return 0 if run is None else run.in_stream + run.queued + max(run.samples - run.entered, 0)

    def tell(self) -> None:
        run = self.current
        if run is None:
            return
        now = time.monotonic()
        per_restart = max(run.iterations // max(run.restarts, 1), 1)
        self.listener(AttackStatus(
            setting=self.setting, attack=run.label,
            restart=f"restart {run.restart + 1}/{run.restarts}" if run.restarts > 1 else "",
            iteration=min(run.iteration, per_restart), n_iter=per_restart, running=self.running(),
            samples=run.samples, seconds_left=self.seconds_left(now), batch_samples=self.batch_samples,
            batch_elapsed=None if self.batch_started is None else now - self.batch_started, at=now))


_TRACKER: ContextVar[_Tracker | None] = ContextVar("simclip_attack_progress", default=None)


@contextlib.contextmanager
def listening(listener: Callable[[AttackStatus], None]) -> Iterator[None]:
    """Within this block, every report of the attacks run in this context goes to ``listener``."""
    token = _TRACKER.set(_Tracker(listener))
    try:
        yield
    finally:
        _TRACKER.reset(token)


def batch(samples: int, settings: Sequence[str]) -> None:
    """A task starts a batch of ``samples`` on which it runs the attacked ``settings``, in this order."""
    if (t := _TRACKER.get()) is not None:
        t.batch_samples, t.batch_started, t.settings = samples, time.monotonic(), tuple(settings)
        t.setting, t.setting_index = "", -1


def setting(name: str) -> None:
    """The task's next setting called ``name`` (one of the batch's, in order) starts."""
    if (t := _TRACKER.get()) is not None:
        later = [i for i in range(t.setting_index + 1, len(t.settings)) if t.settings[i] == name]
        t.setting_index = later[0] if later else -1
        t.setting, t.setting_started, t.work, t.runs, t.current = name, time.monotonic(), 0.0, [], None


def plan(runs: Sequence[tuple[str, int]]) -> None:
    """An attack starts; it will make ``runs``: (label, iterations of every restart together), in order."""
    if (t := _TRACKER.get()) is not None:
        if t.setting_index < 0:  # no task said: the rate is the attack's own
            t.setting_started, t.work = time.monotonic(), 0.0
        t.runs, t.current = [_Run(label, iterations) for label, iterations in runs], None


def run(label: str, samples: int) -> None:
    """The planned run ``label`` starts on ``samples`` samples (a label not planned is run as an extra)."""
    if (t := _TRACKER.get()) is not None:
        started = t.runs.index(t.current) + 1 if t.current in t.runs else 0
        run_ = next((r for r in t.runs[started:] if r.label == label), None)
        if run_ is None:
            run_ = _Run(label, 0)
        run_.samples = samples
        t.current = run_
        t.tell()


def stream(samples: int, restart: int = 0, restarts: int = 1, iterations: int = 0) -> None:
    """The attack starts iterating on ``samples`` samples: restart ``restart`` (0-based) of ``restarts``, each of
    ``iterations`` (0: as planned). A run may start several streams (batches, restarts)."""
    if (t := _TRACKER.get()) is not None and t.current is not None:
        run_ = t.current
        if iterations and not run_.iterations:
            run_.iterations = iterations * restarts
        run_.restart, run_.restarts, run_.iteration, run_.in_stream, run_.queued = restart, restarts, 0, samples, 0
        if restart == 0:
            run_.entered += samples


def advanced(iterations: int, attacked: int, queued: int = 0) -> None:
    """``iterations`` more iterations of the current stream are done; ``attacked`` samples are in its working
    batch and ``queued`` wait for a place. Host values only: call it where the attack already synchronises."""
    if (t := _TRACKER.get()) is not None and t.current is not None:
        run_ = t.current
        t.work += iterations * run_.in_stream  # the samples that were in the batch during these iterations
        run_.iteration += iterations
        run_.in_stream, run_.queued = attacked, queued
        t.tell()


def finished() -> None:
    """The attack has ended: nothing runs until the next :func:`run`."""
    if (t := _TRACKER.get()) is not None:
        t.current = None


def run_label(attack: AttackSpec, rank: int, n_classes: int) -> str:
    """How a run of an ensemble is shown: ``apgd-ce``, or ``apgd-t target 3/9`` for its run towards the target of
    ``rank`` (2 = the most likely wrong class)."""
    if not rank:
        return attack.name
    return f"{attack.name} target {rank - 1}/{min(attack.n_targets, n_classes - 1)}"


def ensemble_runs(spec: EnsembleSpec, n_classes: int) -> list[tuple[str, int]]:
    """The runs :func:`simclip_bench.attacks.ensemble.run_ensemble` makes with ``spec`` on ``n_classes`` classes,
    as (label, iterations of every restart together)."""
    runs = []
    for attack in spec.attacks:
        ranks = range(2, min(attack.n_targets, n_classes - 1) + 2) if attack.loss == "dlr-targeted" else [0]
        runs += [(run_label(attack, rank, n_classes), attack.n_iter * attack.n_restarts) for rank in ranks]
    return runs
