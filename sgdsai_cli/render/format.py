"""Numbers to text, for every table, report and figure label: the one place values are formatted.

Results keep numbers (bytes, ms, fractions); only a renderer turns them into text, through these.
Unknown values (None, NaN) print as "-".
"""

from __future__ import annotations

import math
from typing import Any

KiB, MiB, GiB = 1024, 1024**2, 1024**3
MISSING = "-"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def size(n_bytes: int | float | None) -> str:
    """Bytes with a unit: '25.10 GiB', '551.00 MiB', '1.14 KiB', '12 B' (the largest unit that is at least 1)."""
    if _missing(n_bytes):
        return MISSING
    if abs(n_bytes) >= GiB:
        return f"{n_bytes / GiB:,.2f} GiB"
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:,.2f} {unit}"
    return f"{int(n_bytes):,} B"


def gib(n_bytes: int | float | None) -> str:
    """Bytes for a column headed GiB: '25.10'; a size too small for that keeps its own unit ('3.20 MiB')."""
    if _missing(n_bytes):
        return MISSING
    if n_bytes != 0 and abs(n_bytes) < 0.005 * GiB:
        return size(n_bytes)
    return f"{n_bytes / GiB:,.2f}"


def signed_gib(n_bytes: int | float | None) -> str:
    """gib() with the sign kept in front of a smaller unit too ('-3.20 MiB')."""
    if _missing(n_bytes):
        return MISSING
    return gib(n_bytes) if n_bytes >= 0 else "-" + gib(-n_bytes)


def count(n: int | None) -> str:
    """A whole number with thousands separators: '6,738,415,616'."""
    return MISSING if _missing(n) else f"{int(n):,}"


def pct(fraction: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A fraction as a percentage: 0.0123 -> '1.23%' ('+1.23%' when signed)."""
    if _missing(fraction):
        return MISSING
    return f"{100 * fraction:{'+' if signed else ''}.{digits}f}%"


def pct_value(percent: float | None, digits: int = 1, *, signed: bool = False) -> str:
    """A value already in percent: 40.04 -> '40.0%'."""
    return MISSING if _missing(percent) else f"{percent:{'+' if signed else ''}.{digits}f}%"


def ms(value: float | None) -> str:
    """Milliseconds: three decimals below 10 ms, one above."""
    if _missing(value):
        return MISSING
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def number(value: float | None, digits: int = 4) -> str:
    """A measured quantity (g-SNR, a ratio of sizes): 4 significant digits, one decimal from 1000 up."""
    if _missing(value):
        return MISSING
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def fixed(value: float | None, digits: int = 3) -> str:
    """A number with a fixed count of decimals: a ratio '0.715', a g-SNR/sqrt(n-1) '1.00003'."""
    return MISSING if _missing(value) else f"{value:,.{digits}f}"


def yes_no(value: bool | None) -> str:
    return MISSING if value is None else ("yes" if value else "no")


def cell(value: Any) -> str:
    """Any value in a generic table: numbers with separators, booleans yes/no, lists joined."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return count(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)
