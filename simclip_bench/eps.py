"""Perturbation budgets as people write them: ``4/255`` or ``0.0157``.

An eps is always in [0,1] pixel units; the text form is kept for tables and file names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class Eps:
    """A perturbation budget: ``value`` in pixel units (l-inf: 0 < value <= 1; l2: any positive radius),
    ``text`` as written."""

    value: float
    text: str

    def __str__(self) -> str:
        return self.text


def parse_eps(text: str, norm: str = "linf") -> Eps:
    """Parse ``"4/255"``, ``"0.0157"`` or ``"1e-2"``; raise ValueError with a fix-it message otherwise.

    ``norm="linf"`` (default) needs 0 < eps <= 1; ``norm="l2"`` accepts any finite positive radius
    (e.g. 0.5 or 2.0; the l2 norm of a 224 px image's perturbation can exceed 1).
    """
    raw = str(text).strip()
    limit = "0 < eps <= 1" if norm == "linf" else "eps > 0"
    hint = f"write it as a fraction such as 4/255 or a decimal such as 0.0157 (pixel units, {limit})"
    m = _FRACTION.match(raw)
    try:
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ValueError
            value = num / den
            display = f"{m.group(1)}/{m.group(2)}"
        else:
            value = float(raw)
            display = raw
    except ValueError:
        raise ValueError(f"{raw!r} is not an eps: {hint}") from None
    if not math.isfinite(value) or value <= 0 or (norm == "linf" and value > 1):
        raise ValueError(f"eps {raw!r} = {value:g} is outside {'(0, 1]' if norm == 'linf' else '(0, inf)'}: {hint}")
    if not m:
        # Show decimals that are k/255 in the usual form, so tables group them with fraction input.
        k = Fraction(value).limit_denominator(255)
        if k.denominator == 255 and abs(float(k) - value) < 1e-6 and k.numerator > 0:
            display = f"{k.numerator}/255"
    return Eps(value=value, text=display)
