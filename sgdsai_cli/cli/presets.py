"""`sgdsai presets [--format table|json]`: the model presets, their parameter counts and bytes per precision."""

from __future__ import annotations

import typer

from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")


def preset_rows() -> list[dict]:
    """One dict per preset: name, family, params (a tied head counted once) and parameter bytes per
    precision (``bytes_fp32`` ... ``bytes_amp_fp16``; amp keeps fp32 parameters).

    ``params`` is the preset's documented count, which the model tests check against the built
    model exactly; a preset without one is built on meta (shapes only) and counted.
    """
    from sgdsai_cli.models import PRESETS, build_model, count_params
    from sgdsai_cli.precision import PRECISIONS

    rows = []
    for name, spec in PRESETS.items():
        n = spec.params if spec.params is not None else count_params(build_model(spec, device="meta"))
        row = {"name": name, "family": spec.family, "params": n}
        for pname, prec in PRECISIONS.items():
            row[f"bytes_{pname.replace('-', '_')}"] = n * prec.bytes_per_param
        rows.append(row)
    return rows


@app.command("presets")
@handle_errors
def presets_command(
    output_format: str = typer.Option("table", "--format", metavar="F", help="table or json."),
) -> None:
    """List the model presets: family, parameters and parameter bytes in each precision."""
    from sgdsai_cli.errors import BadInput, did_you_mean
    from sgdsai_cli.files import dumps

    if output_format not in FORMATS:
        raise BadInput(f"unknown format '{output_format}'" + did_you_mean(output_format, FORMATS))
    rows = preset_rows()
    if output_format == "json":
        print(dumps(rows))
        return
    from rich.table import Table

    from sgdsai_cli.render.profile import gib_cell

    table = Table(title="Model presets: parameter memory (GiB)", title_justify="left",
                  caption="amp-bf16 and amp-fp16 keep fp32 parameters", caption_justify="left")
    for col, justify in (("name", "left"), ("family", "left"), ("parameters", "right"),
                         ("fp32 / amp", "right"), ("bf16 / fp16", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['params']:,}", gib_cell(r["bytes_fp32"]), gib_cell(r["bytes_bf16"]))
    stdout().print(table)
