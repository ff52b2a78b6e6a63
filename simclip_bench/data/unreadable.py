"""What to do with an image that cannot be read (``--on-error``), shared by ``simclip eval`` and ``simclip train``.

* ``skip`` (default): the image is left out, counted and reported at the end (eval: the result rows
  are over the readable samples, with their ``n_samples`` and an ``unreadable-images(k)`` flag; train:
  ``unreadable_images`` in ``metrics.jsonl``);
* ``fail``: the first unreadable image stops the command with one line naming the file.
"""
from __future__ import annotations

from simclip_bench.errors import UserError, did_you_mean

SKIP = "skip"
FAIL = "fail"
ON_ERROR_CHOICES: tuple[str, ...] = (SKIP, FAIL)
DEFAULT_ON_ERROR = SKIP
FLAG_UNREADABLE = "unreadable-images"


def check_on_error(value: str) -> str:
    """``value`` if it is a valid ``--on-error`` choice, else a UserError with the closest choice."""
    if value not in ON_ERROR_CHOICES:
        raise UserError(f"--on-error {value!r} is not a choice{did_you_mean(value, ON_ERROR_CHOICES)}; use "
                        "skip (count, report and leave out unreadable images) or fail (stop at the first)")
    return value


def describe(where: str, error: BaseException) -> str:
    """``"<file>: <Error>: <first line of its message>"``: one line about one unreadable image."""
    lines = str(error).splitlines()
    return f"{where}: {type(error).__name__}" + (f": {lines[0]}" if lines else "")


def unreadable_error(what: str, description: str) -> UserError:
    """The ``--on-error fail`` error for the image ``description`` (see :func:`describe`)."""
    return UserError(f"unreadable {what} {description}; fix or remove the file, or pass --on-error skip to "
                     "count and skip unreadable images")
