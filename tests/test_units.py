"""sgdsai_cli.units: sizes and percentages, and the one-line message for each kind of bad text."""

from __future__ import annotations

import re

import pytest

from sgdsai_cli.errors import BadInput
from sgdsai_cli.units import MAX_SIZE, parse_percent, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("80GiB", 80 * 1024**3), ("80GB", 80 * 10**9), ("512MiB", 512 * 1024**2), ("1024", 1024), ("1", 1),
     (" 1.5 KiB ", 1536), ("1e3", 1000), ("8TiB", 8 * 1024**4), ("9.2e18", 9_200_000_000_000_000_000)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("lots", "use a number with a unit such as 80GiB, 80GB or 512MiB"),
        ("-1GiB", "use a number with a unit such as 80GiB, 80GB or 512MiB"),
        ("12parsecs", "use a number with a unit such as 80GiB, 80GB or 512MiB"),
        ("0", "must be greater than zero"),
        ("0GiB", "must be greater than zero"),
        ("0.4", "must be at least 1 byte"),
        # absurd: inf as a number, or beyond what any counter holds
        ("1e400GB", "too large: a size must be a finite number of bytes below 2**63, about 9.2 EB"),
        ("1e300GB", "too large: a size must be a finite number of bytes below 2**63, about 9.2 EB"),
        ("1e19", "too large: a size must be a finite number of bytes below 2**63, about 9.2 EB"),
        ("8388608TiB", "too large: a size must be a finite number of bytes below 2**63, about 9.2 EB"),
    ],
)
def test_parse_size_errors(text, reason):
    with pytest.raises(BadInput, match=re.escape(f"bad size '{text}' ({reason})")):
        parse_size(text)


def test_the_size_limit_is_exclusive():
    assert parse_size(str(MAX_SIZE - 1024)) == MAX_SIZE - 1024  # float rounding: not exactly 2**63 - 1
    with pytest.raises(BadInput, match="too large"):
        parse_size(str(MAX_SIZE))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1%", 0.01), ("1", 0.01), ("0.5%", 0.005), ("0", 0.0), (" 10 % ", 0.10), ("1e3%", 10.0)],
)
def test_parse_percent(text, expected):
    assert parse_percent(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "use a number such as 1% or 0.5%"),
        ("", "use a number such as 1% or 0.5%"),
        ("-1%", "must be zero or more"),
        ("1e400", "must be a finite percentage such as 1% or 0.5%"),
        ("inf%", "must be a finite percentage such as 1% or 0.5%"),
        ("-inf", "must be a finite percentage such as 1% or 0.5%"),
        ("nan", "must be a finite percentage such as 1% or 0.5%"),
    ],
)
def test_parse_percent_errors(text, reason):
    with pytest.raises(BadInput, match=re.escape(f"bad percentage '{text}' ({reason})")):
        parse_percent(text)


@pytest.mark.parametrize("parse", [parse_size, parse_percent])
def test_long_or_multiline_text_is_cut_in_the_message(parse):
    with pytest.raises(BadInput) as err:
        parse("9" * 5000 + "\nx")
    message = str(err.value)
    assert "\n" not in message and len(message) < 200
    assert "'" + "9" * 37 + "...'" in message
