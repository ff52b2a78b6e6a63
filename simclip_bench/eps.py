"""Perturbation budgets as people write them: ``4/255`` or ``0.0157``.

An eps is always in [0,1] pixel units; the text form is kept for tables and file names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from simclip_bench.errors import UserError

# ASCII digits only ([0-9], not \d): float() alone would also take "1_0", "١" or "infinity", which no table
# should show. Any whitespace around the "/" (a pasted non-breaking space too).
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_FRACTION = re.compile(rf"({_NUMBER})\s*/\s*({_NUMBER})")
_DECIMAL = re.compile(rf"{_NUMBER}(?:[eE][+-]?[0-9]+)?")
_SNAP = 1e-6  # a decimal this close to k/255 (e.g. 0.0156863, 7 digits copied from a paper) is k/255
_SHOWN = 40  # characters of a bad value quoted in the error


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
        raise EpsError(f"{_quoted(raw)} is not an eps: {hint}")
    if not math.isfinite(value) or value <= 0 or (norm == "linf" and value > 1):
        raise EpsError(f"eps {_quoted(raw)} = {value:g} is outside {'(0, 1]' if norm == 'linf' else '(0, inf)'}: "
                       f"{hint}")
    if display is None:
        k = _as_k_over_255(value)
        value, display = (k / 255, f"{k}/255") if k is not None else (value, raw)
    return Eps(value=value, text=display)
