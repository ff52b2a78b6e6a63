"""Perturbation budgets as people write them: ``4/255`` or ``0.0157``.

An eps is always in [0,1] pixel units; the text form is kept for tables and file names.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from simclip_bench.errors import UserError

# ASCII digits only ([0-9], not \d): float() alone would also take "1_0", "١" or "infinity", which no table
# should show. Any whitespace around the "/" (a pasted non-breaking space too).
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_DECIMAL = re.compile(rf"{_NUMBER}(?:[eE][+-]?[0-9]+)?")
_LIST_SEPARATOR = re.compile(r"\s*[,;]\s*|\s+")  # "4/255,8/255", "4/255; 8/255", "4/255 8/255" (quoted)
_SNAP = 1e-6  # a decimal this close to k/255 (e.g. 0.0156863, 7 digits copied from a paper) is k/255
_SHOWN = 40  # characters of a bad value quoted in the error
SAME_EPS_REL_TOL = 1e-6  # two eps this close (relatively) are one: the tolerance at which a decimal reads as k/255


class EpsError(UserError, ValueError):
    """An eps that does not parse or is out of range: a UserError (one line for the CLI), and a ValueError
    so that callers can catch it to prefix the option name (``--eps: ...``)."""


@dataclass(frozen=True)
class Eps:
    """A perturbation budget: ``value`` in pixel units (l-inf: 0 < value <= 1; l2: any positive radius),
    ``text`` as written (``k/255`` when the value is one); ``parse_eps(text)`` gives back ``value`` exactly."""

    value: float
    text: str

    def __str__(self) -> str:
        return self.text


def _quoted(raw: str) -> str:
    return repr(raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "...")


def _read(raw: str) -> tuple[float, str | None]:
    """The value of ``raw`` and its text when written as a fraction (None for a decimal); NaN when it is neither."""
    m = _FRACTION.fullmatch(raw)
    if m:
        num, den = float(m.group(1)), float(m.group(2))
        return (num / den if den != 0 else math.nan), f"{m.group(1)}/{m.group(2)}"
    return (float(raw) if _DECIMAL.fullmatch(raw) else math.nan), None


def _as_k_over_255(value: float) -> int | None:
    """``k`` when ``value`` is k/255 (within :data:`_SNAP`) for a positive integer k, else None; also None
    when k/255 is a short decimal itself (1 = 255/255, 0.2 = 51/255), which reads better as written."""
    if not math.isfinite(value * 255):  # an l2 radius near the largest float: no k/255 form, and round() would fail
        return None
    k = round(value * 255)
    if k <= 0 or abs(k / 255 - value) >= _SNAP:
        return None
    return k if 255 // math.gcd(k, 255) not in (1, 5) else None


def parse_eps(text: str, norm: str = "linf") -> Eps:
    """Parse ``"4/255"``, ``"0.0157"`` or ``"1e-2"`` (ASCII digits); raise :class:`EpsError` with a fix-it otherwise.

    ``norm="linf"`` (default) needs 0 < eps <= 1; ``norm="l2"`` accepts any finite positive radius
    (e.g. 0.5 or 2.0; the l2 norm of a 224 px image's perturbation can exceed 1). A decimal within 1e-6
    of k/255 becomes exactly k/255, shown as ``k/255``, so tables group it with fraction input.
    """
    raw = str(text).strip()
    limit = "0 < eps <= 1" if norm == "linf" else "eps > 0"
    hint = f"write it as a fraction such as 4/255 or a decimal such as 0.0157 (pixel units, {limit})"
    value, display = _read(raw)
    if math.isnan(value):
        parts = [p for p in _LIST_SEPARATOR.split(raw) if p]
        if len(parts) > 1 and all(not math.isnan(_read(p)[0]) for p in parts):
            raise EpsError(f"{_quoted(raw)} is {len(parts)} eps in one value: give each its own --eps, e.g. "
                           f"{' '.join('--eps ' + p for p in parts)} (simclip eval; train and attack take one eps)")
        raise EpsError(f"{_quoted(raw)} is not an eps: {hint}")
    if not math.isfinite(value) or value <= 0 or (norm == "linf" and value > 1):
        # --eps 4: pixel levels, as papers write 4/255 in words ("eps = 4")
        meant = f" (did you mean {value:g}/255?)" if norm == "linf" and 1 < value <= 255 else ""
        raise EpsError(f"eps {_quoted(raw)} = {value:g} is outside {'(0, 1]' if norm == 'linf' else '(0, inf)'}"
                       f"{meant}: {hint}")
    if display is None:
        k = _as_k_over_255(value)
        value, display = (k / 255, f"{k}/255") if k is not None else (value, raw)
    return Eps(value=value, text=display)


_EpsOrText = TypeVar("_EpsOrText", Eps, str)


def unique_eps(values: Iterable[_EpsOrText]) -> list[_EpsOrText]:
    """``values`` (:class:`Eps`, or eps as written) in first-seen order, each eps once.

    Two count as one when their values differ by at most :data:`SAME_EPS_REL_TOL` relatively: ``4/255`` and
    ``0.0156862745`` are one eps, ``0.0157`` is another. Text that does not parse is kept once per spelling,
    for :func:`parse_eps` to refuse where the option is checked.
    """
    kept: list[_EpsOrText] = []
    values_seen: list[float] = []
    texts_seen: set[str] = set()
    for item in values:
        if isinstance(item, Eps):
            value: float | None = item.value
        else:
            try:
                value = parse_eps(item, norm="l2").value  # any positive radius: the norm's range is checked later
            except EpsError:
                value = None
        if value is None:
            text = str(item).strip()
            if text in texts_seen:
                continue
            texts_seen.add(text)
        elif any(math.isclose(value, v, rel_tol=SAME_EPS_REL_TOL) for v in values_seen):
            continue
        else:
            values_seen.append(value)
        kept.append(item)
    return kept


_SPLIT_PIECES = 2  # "--eps 4 / 255" is the most a value is split into: "4", "/", "255"


def split_eps_hint(args: Sequence[str]) -> str | None:
    """The fix for an eps the shell split at a space, or None.

    ``--eps 4 /255`` reaches the parser as ``--eps 4`` and a stray argument ``/255`` (which the command
    reports as an unexpected extra argument); so do ``--eps 4/ 255`` and ``--eps 4 / 255``. When the
    arguments after an ``--eps`` value join up with it into a fraction, this says to write it without spaces.
    """
    for i, arg in enumerate(args):
        if arg == "--eps" and i + 1 < len(args):
            value, rest = args[i + 1], list(args[i + 2:])
        elif arg.startswith("--eps="):
            value, rest = arg[len("--eps="):], list(args[i + 1:])
        else:
            continue
        pieces: list[str] = []
        for piece in rest[:_SPLIT_PIECES]:
            if piece.startswith("-"):
                break
            pieces.append(piece)
        for n in range(len(pieces), 0, -1):
            joined = value + "".join(pieces[:n])
            if _FRACTION.fullmatch(joined) and not math.isnan(_read(joined)[0]):
                return (f"--eps {value} {' '.join(pieces[:n])}: the shell split one eps into {n + 1} arguments; "
                        f"write it without spaces: --eps {joined}")
    return None
