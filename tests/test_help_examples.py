"""The examples in every command's ``--help`` paste into a shell as shown in an 80-column terminal.

At ``COLUMNS=80`` each line of the Examples section must be whole: a command (``simclip ...``, or
``torchrun ...``), a ``#`` comment, or the continuation of a command whose line ends in ``\\`` (directly
below it, no blank line between). Anything else is a piece of a line that the terminal width wrapped,
which a shell would run as a command of its own.
"""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simclip_bench.cli import app

COLUMNS = 80
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)
STARTS = ("simclip", "torchrun", "#")


def examples_section(command: str) -> list[str]:
    """The lines after the ``Examples`` heading of ``simclip COMMAND --help`` at 80 columns (right-stripped)."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(COLUMNS), "TERMINAL_WIDTH": None})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.strip() in ("Examples", "Example"))
    return [line.rstrip() for line in lines[heading + 1:]]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_examples_are_whole_lines_within_80_columns(command):
    lines = examples_section(command)
    assert any(line.strip().startswith("simclip") for line in lines)
    continued = False
    for line in lines:
        assert len(line) <= COLUMNS, line
        text = line.strip()
        if continued:
            assert text, f"blank line inside a '\\'-continued example of simclip {command}"
        else:
            assert not text or text.startswith(STARTS), f"wrapped example line in simclip {command} --help: {line!r}"
        continued = text.endswith("\\")
    assert not continued, f"the last example of simclip {command} ends in '\\'"
