"""`sgdsai check RESULT.json --baseline BASE.json`: a client of ``sgdsai_cli.check``.

Exit 0 when every compared figure is within tolerance and every budget holds, 1 on a regression or
an exceeded budget, 2 for a missing, corrupt or wrong-schema file, a bad option or nothing to compare.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")
EXAMPLES = opt.epilog(
    "sgdsai check result.json --baseline profiles/baselines/llama2-7b-fp32.json",
    "sgdsai check result.json --baseline base.json --tolerance 0% --budget state=30GiB --budget peak=80GB",
)


@app.command("check", epilog=EXAMPLES)
@handle_errors
def check_command(
    result: Path = typer.Argument(..., metavar="RESULT.json", show_default=False,
                                  help="Profile result JSON to check (from sgdsai profile --json)."),
    baseline: Path = typer.Option(..., "--baseline", "-b", metavar="PATH", show_default=False,
                                  help="Baseline profile JSON to compare against."),
    tolerance: str = typer.Option("1%", "--tolerance", metavar="X%", help="Allowed growth of each memory figure."),
    tolerance_latency: str = typer.Option("10%", "--tolerance-latency", metavar="X%",
                                          help="Allowed growth of p50 latencies (same device model only)."),
    budget: list[str] = typer.Option(None, "--budget", metavar="KEY=SIZE",
                                     help="Cap a figure of every run: state, peak_allocated, peak_reserved, "
                                          "nvml_used_peak, activation_peak, step_transient, estimated_peak, "
                                          "or peak (the largest peak figure). Repeatable. Example: state=30GiB."),
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """Compare a profile result with a baseline and budgets; exit 1 on a regression."""
    from sgdsai_cli.analysis.check import check
    from sgdsai_cli.errors import RegressionFound
    from sgdsai_cli.files import dumps
    from sgdsai_cli.render.check import check_table

    opt.check_format(output_format, FORMATS)
    report = check(result, baseline, tolerance=tolerance, tolerance_latency=tolerance_latency, budgets=budget or [])
    if output_format == "json":
        print(dumps(report.to_dict()))
    elif not quiet:
        console = stdout()
        console.print(check_table(report))
        for note in report.notes:
            console.print(f"note: {note}", highlight=False, markup=False)
        if report.passed:
            console.print(report.summary(), highlight=False, markup=False, style="bold green")
    if not report.passed:  # the summary goes to stderr as the error line
        raise RegressionFound(report.summary())
