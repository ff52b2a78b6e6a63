"""The one exception type that the CLI turns into a one-line message and exit code 2."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and how to fix it."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Counts and seeds beyond this are typos (and overflow torch's and numpy's integer types).
MAX_COUNT = 2**31 - 1


def check_count(option: str, value: int, minimum: int = 1) -> None:
    """``value`` of ``option`` must be an integer in [minimum, MAX_COUNT]; otherwise a UserError."""
    if value < minimum:
        what = "a positive integer" if minimum == 1 else f">= {minimum}"
        raise UserError(f"{option} must be {what}, got {value}")
    if value > MAX_COUNT:
        raise UserError(f"{option} {value} is too large (at most {MAX_COUNT})")
