"""Parsing and formatting of sizes and percentages. Numbers stay numbers until shown."""

from __future__ import annotations

import math
import re

from sgdsai_cli.errors import BadInput

GiB = 1024**3
MAX_SIZE = 2**63  # bytes; a size at or beyond this is no real memory (and overflows signed 64-bit counters)
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _shown(text: object) -> str:
    """A user's text for a one-line error: newlines as spaces, cut to 40 characters."""
    s = " ".join(str(text).splitlines())
    return s if len(s) <= 40 else s[:37] + "..."


def parse_size(text: str) -> int:
    """'80GiB' -> 85899345920, '80GB' -> 80000000000, '512MiB', '1024' (bytes)."""
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise BadInput(f"bad size '{_shown(text)}' (use a number with a unit such as 80GiB, 80GB or 512MiB)")
    value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value >= MAX_SIZE:
        raise BadInput(f"bad size '{_shown(text)}' (too large: a size must be a finite number of bytes below 2**63, "
                       "about 9.2 EB)")
    if value <= 0:
        raise BadInput(f"bad size '{_shown(text)}' (must be greater than zero)")
    if round(value) < 1:
        raise BadInput(f"bad size '{_shown(text)}' (must be at least 1 byte)")
    return int(round(value))


def parse_percent(text: str) -> float:
    """'1%' or '1' -> 0.01; '0.5%' -> 0.005."""
    s = str(text).strip().rstrip("%").strip()
    try:
        value = float(s)
    except ValueError:
        raise BadInput(f"bad percentage '{_shown(text)}' (use a number such as 1% or 0.5%)") from None
    if not math.isfinite(value):
        raise BadInput(f"bad percentage '{_shown(text)}' (must be a finite percentage such as 1% or 0.5%)")
    if value < 0:
        raise BadInput(f"bad percentage '{_shown(text)}' (must be zero or more)")
    return value / 100.0


def gib(n_bytes: int | float | None) -> float | None:
    """Bytes -> GiB as a float (None stays None)."""
    return None if n_bytes is None else n_bytes / GiB


def fmt_gib(n_bytes: int | float | None, digits: int = 2) -> str:
    """Bytes -> '25.10' (GiB) for tables; '-' for unknown."""
    return "-" if n_bytes is None else f"{n_bytes / GiB:,.{digits}f}"


def fmt_count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
