"""`sgdsai report RESULT.json... --out DIR`: report.md and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli.app import app, handle_errors


@app.command("report")
@handle_errors
def report_command(
    results: list[Path] = typer.Argument(..., help="Result files (profile, gsnr, plan JSON).", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, report.html and figures/.",
                             show_default=False),
) -> None:
    """Write report.md and report.html (figures embedded) with the tables and plots of every input."""
    from sgdsai_cli.render.report import build_report

    paths = build_report(results, out)
    print(f"wrote {paths.markdown}")
    print(f"wrote {paths.html} ({paths.html.stat().st_size / 1024:,.0f} KiB, {len(paths.figures)} figures embedded)")
