"""Rich tables the way every command draws them: numbers right-aligned and never cut.

A column of numbers folds (wraps) instead of eliding when the console is narrow, and a console that
is not a terminal (a pipe, a CI log) is wide enough for any table we draw.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

PIPE_WIDTH = 250  # columns for output that is not a terminal: wide tables are not squeezed to 80


def new_table(title: str | None, columns: Iterable[tuple[str, str]], *, caption: str | None = None) -> Table:
    """A table with ``columns`` as (header, "left"|"right"); cells fold rather than being cut."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    return table


def styled(text: str, style: str | None) -> str:
    """``text`` in a rich style (markup), e.g. a red 'no'."""
    return f"[{style}]{text}[/]" if style else text


def fits_cell(fits: bool | None) -> str:
    """'yes' or a red 'no' ('-' when unknown)."""
    if fits is None:
        return "-"
    return "yes" if fits else styled("no", "bold red")
