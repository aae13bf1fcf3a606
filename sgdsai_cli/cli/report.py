"""`sgdsai report RESULT.json... --out DIR`: report.md and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors

FORMATS = ("table", "json")
EXAMPLES = opt.epilog(
    "sgdsai report result.json --out report/",
    "sgdsai report profile.json gsnr.json plan.json --out report/ --format json",
)


@app.command("report", epilog=EXAMPLES)
@handle_errors
def report_command(
    results: list[Path] = typer.Argument(..., metavar="RESULT.json...", show_default=False,
                                         help="Result files (profile, gsnr, plan, bench-step JSON)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Folder for report.md, report.html and figures/."),
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """Write report.md and report.html (figures embedded) with the tables and plots of every input."""
    from sgdsai_cli.files import dumps
    from sgdsai_cli.render.report import build_report

    opt.check_format(output_format, FORMATS)
    paths = build_report(results, out)
    if output_format == "json":
        print(dumps({"markdown": str(paths.markdown), "html": str(paths.html),
                     "figures": [str(f) for f in paths.figures]}))
    elif not quiet:
        print(f"wrote {paths.markdown}")
        kib = paths.html.stat().st_size / 1024
        print(f"wrote {paths.html} ({kib:,.0f} KiB, {len(paths.figures)} figures embedded)")
