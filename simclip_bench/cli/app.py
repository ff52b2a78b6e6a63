"""The Typer app every command registers on, its one-line error handling, and shared CLI helpers."""
from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click and has its own Abort
    from typer._click import exceptions as click_exceptions
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exceptions
    from click.exceptions import Abort

from simclip_bench.attacks.eps import Eps, parse_eps, split_eps_hint
from simclip_bench.cli.plain_progress import PlainProgress, duration_text, line_eta
from simclip_bench.cli.threads import warn_if_oversubscribed
from simclip_bench.errors import UserError

# Tables and lines on stdout; in a log (not a terminal: tee, nohup, Slurm) as wide as they are, where rich would
# cut every table to 80 columns. COLUMNS, when set, still decides.
LOG_WIDTH = 1000
console = Console(stderr=True)
stdout = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=LOG_WIDTH)


class OneLineErrors(TyperGroup):
    """Every bad input ends as one line on stderr and exit code 2: no usage box, no traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        args = list(sys.argv[1:] if args is None else args)
        if not args:
            args = ["--help"]
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as e:
            print(e.format_message(), file=sys.stderr)
            sys.exit(0)
        except click_exceptions.ClickException as e:
            where = f"simclip {e.ctx.info_name}" if getattr(e, "ctx", None) and e.ctx.parent else "simclip"
            _fail(split_eps_hint(args) or f"{e.format_message()} (see '{where} --help')")  # --eps 4 /255
        except UserError as e:
            _fail(str(e))
        except Abort:
            console.print("aborted")
            sys.exit(130)
        except MemoryError:
            _fail("out of memory; lower --batch-size")
        except Exception as e:  # CUDA OOM is a RuntimeError subclass: map it, re-raise everything else
            if type(e).__name__ == "OutOfMemoryError":  # batched work halves its batch instead (memory/adaptive_batch)
                _fail("out of GPU memory outside the batched work (e.g. loading the model); use a device with more "
                      "memory or a smaller model")
            raise
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _fail(message: str) -> None:
    print(f"simclip: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


app = typer.Typer(cls=OneLineErrors, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="Sim-CLIP adversarial fine-tuning and honest robustness evaluation of CLIP models.")


def say(text: str) -> None:
    """One line of a job's log on stderr, as plain text: the library's texts carry no markup, and what they
    quote (paths, model specs) may hold brackets that rich would read as markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def eps_list(values: list[str], option: str = "--eps", norm: str = "linf") -> list[Eps]:
    try:
        return [parse_eps(v, norm) for v in values]
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def unsafe_pickle_option() -> Any:
    """``--allow-unsafe-pickle`` for every command that loads a ``--model`` (see :func:`warn_unsafe_pickle`)."""
    # The flag's name is also spelled in simclip_bench.models.vision_tower.UNSAFE_PICKLE_FLAG (the refusal names it);
    # importing it here would load torch for every --help.
    return typer.Option(False, "--allow-unsafe-pickle",
                        help="Let ARCH:PATH .pt/.bin weights that hold more than tensors (e.g. a state dict saved "
                             "with its training args) load with the full unpickler. Unpickling runs code from the "
                             "file: only for files you trust.")


def warn_unsafe_pickle(allowed: bool) -> bool:
    """Print one warning line to stderr when ``--allow-unsafe-pickle`` is given; returns ``allowed``."""
    if allowed:
        print("simclip: warning: --allow-unsafe-pickle: model weights that are pickles are fully unpickled, which "
              "can run arbitrary code; use it only for files you trust", file=sys.stderr)
    return allowed


class LazyProgress(Progress):
    """A rich progress display that appears only once its first task is added.

    Commands open the bar before they know whether their input is good; with an eager bar, a
    bad option would print an empty bar line before its one error line.
    """

    _shown = False

    def start(self) -> None:  # called by ``with``: wait for the first task
        pass

    def add_task(self, *args: Any, **kwargs: Any):
        task = super().add_task(*args, **kwargs)
        if not self._shown:
            self._shown = True
            warn_if_oversubscribed()  # the work starts: every input check has passed
            super().start()
        return task

    def stop(self) -> None:
        if self._shown:
            super().stop()


class FieldColumn(ProgressColumn):
    """A task's text field (rich markup, escaped by the reporter), empty when the task has none."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, task: Task) -> Text:
        return Text.from_markup(str(task.fields.get(self.name) or ""))


class EtaColumn(ProgressColumn):
    """The time left of a line as the plain lines give it (:func:`~simclip_bench.cli.plain_progress.line_eta`:
    the attack phases left in the batch included)."""

    def render(self, task: Task) -> Text:
        return Text("" if task.finished else f"ETA {duration_text(line_eta(task))}")


def progress_bar() -> Progress:
    """The progress display of long commands (on stderr): live bars on a terminal (:class:`LazyProgress`),
    plain lines now and then in a log file (:class:`~simclip_bench.cli.plain_progress.PlainProgress`). Both
    show a running attack's phase (``phase``) and an ETA that counts the phases left."""
    if not console.is_terminal:
        return PlainProgress(console, on_first_task=warn_if_oversubscribed)
    return LazyProgress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                        FieldColumn("info"), FieldColumn("phase"), EtaColumn(), console=console, transient=False)


def main() -> None:
    app()
