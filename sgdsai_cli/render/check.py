"""The check table: one row per compared figure, failures in red."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sgdsai_cli.analysis.check import (
    IMPROVED,
    MISSING,
    NEW,
    NOT_OK,
    OK,
    OVER_BUDGET,
    REGRESSION,
    WITHIN_BUDGET,
    CheckReport,
    CheckRow,
    change_text,
)
from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import new_table

STYLE = {REGRESSION: "bold red", OVER_BUDGET: "bold red", IMPROVED: "green", OK: "", WITHIN_BUDGET: "",
         MISSING: "yellow", NEW: "yellow", NOT_OK: "yellow"}


def value_text(row: CheckRow, value: Any) -> str:
    """A row's baseline or current value: a size, milliseconds or a status word."""
    if value is None:
        return fmt.MISSING
    if row.kind in ("memory", "budget"):
        return fmt.size(value)
    if row.kind == "latency":
        return f"{fmt.ms(value)} ms"
    return str(value)


def check_table(report: CheckReport, *, title: str | None = None) -> Table:
    """run, metric, baseline, current, change, verdict (a case column when several cases are compared)."""
    cases = sorted({row.case for row in report.rows})
    if title is None:
        title = "check: " + ("PASS" if report.passed else "FAIL") + (f" ({cases[0]})" if len(cases) == 1 else "")
    columns = [("case", "left")] if len(cases) > 1 else []
    columns += [("run", "left"), ("metric", "left"), ("baseline", "right"), ("current", "right"),
                ("change", "right"), ("verdict", "left")]
    table = new_table(title, columns)
    for row in report.rows:
        baseline_text = value_text(row, row.baseline)
        if row.kind == "budget":
            baseline_text = f"budget {baseline_text}"
        cells = [row.case] if len(cases) > 1 else []
        metric = row.metric.removesuffix("_bytes") if row.kind == "memory" else row.metric
        table.add_row(*cells, row.run, metric, baseline_text, value_text(row, row.current), change_text(row),
                      row.verdict, style=STYLE.get(row.verdict) or None)
    return table
