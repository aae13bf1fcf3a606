"""`sgdsai presets`: the model presets, their parameter counts and bytes per precision."""

from __future__ import annotations

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")
EXAMPLES = opt.epilog("sgdsai presets", "sgdsai presets --format json")


@app.command("presets", epilog=EXAMPLES)
@handle_errors
def presets_command(
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """List the model presets: family, parameters and parameter bytes in each precision."""
    from sgdsai_cli.analysis.presets import preset_rows
    from sgdsai_cli.files import dumps
    from sgdsai_cli.render.presets import presets_table

    opt.check_format(output_format, FORMATS)
    rows = preset_rows()
    if output_format == "json":
        print(dumps(rows))
    else:
        stdout().print(presets_table(rows, notes=not quiet))
