"""`sgdsai check RESULT.json --baseline BASE.json [--tolerance 1%] [--tolerance-latency 10%] [--budget KEY=SIZE]...`.

Exit 0 when every compared figure is within tolerance and every budget holds, 1 on a regression or
an exceeded budget, 2 for a missing, corrupt or wrong-schema file, a bad option or nothing to compare.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")


@app.command("check")
@handle_errors
def check_command(
    result: Path = typer.Argument(..., help="Profile result JSON to check (from sgdsai profile --json).",
                                  show_default=False),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline profile JSON to compare against.",
                                  show_default=False),
    tolerance: str = typer.Option("1%", "--tolerance", help="Allowed growth of each memory figure."),
    tolerance_latency: str = typer.Option("10%", "--tolerance-latency",
                                          help="Allowed growth of p50 latencies (same device model only)."),
    budget: list[str] = typer.Option(None, "--budget", metavar="KEY=SIZE",
                                     help="Cap a figure of every run: state, peak_allocated, peak_reserved, "
                                          "nvml_used_peak, activation_peak, step_transient, estimated_peak, "
                                          "or peak (the largest peak figure). Repeatable. Example: state=30GiB."),
    output_format: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Compare a profile result with a baseline and budgets; exit 1 on a regression."""
    from sgdsai_cli.analysis.check import check_table, compare_files, parse_budgets, report_to_dict
    from sgdsai_cli.errors import BadInput, RegressionFound, did_you_mean
    from sgdsai_cli.files import dumps
    from sgdsai_cli.units import parse_percent

    if output_format not in FORMATS:
        raise BadInput(f"unknown format '{output_format}'" + did_you_mean(output_format, FORMATS))
    tol = parse_percent(tolerance)
    tol_latency = parse_percent(tolerance_latency)
    budgets = parse_budgets(budget)
    report = compare_files(result, baseline, tolerance=tol, tolerance_latency=tol_latency, budgets=budgets)
    if output_format == "json":
        print(dumps(report_to_dict(report)))
    else:
        console = stdout()
        if not console.is_terminal:  # CI logs and files: do not squeeze the table to 80 columns
            console.width = max(console.width, 120)
        console.print(check_table(report))
        for note in report.notes:
            console.print(f"note: {note}", highlight=False, markup=False)
        if report.passed:
            console.print(report.summary(), highlight=False, markup=False, style="bold green")
    if not report.passed:  # the summary goes to stderr as the error line
        raise RegressionFound(report.summary())
