"""The Typer app every command registers on, its one-line error handling, and shared CLI helpers."""
from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click and has its own Abort
    from typer._click import exceptions as click_exceptions
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exceptions
    from click.exceptions import Abort

from simclip_bench.eps import Eps, parse_eps
from simclip_bench.errors import UserError

console = Console(stderr=True)
stdout = Console()


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
            _fail(f"{e.format_message()} (see '{where} --help')")
        except UserError as e:
            _fail(str(e))
        except Abort:
            console.print("aborted")
            sys.exit(130)
        except MemoryError:
            _fail("out of memory; lower --batch-size")
        except Exception as e:  # CUDA OOM is a RuntimeError subclass: map it, re-raise everything else
            if type(e).__name__ == "OutOfMemoryError":
                _fail("out of GPU memory; lower --batch-size")
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


def eps_list(values: list[str], option: str = "--eps") -> list[Eps]:
    try:
        return [parse_eps(v) for v in values]
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TextColumn("ETA"), TimeRemainingColumn(compact=True),
                    console=console, transient=False)


def main() -> None:
    app()
