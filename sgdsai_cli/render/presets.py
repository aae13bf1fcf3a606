"""The presets table (GiB of parameters per precision)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import new_table


def presets_table(rows: list[dict[str, Any]], *, notes: bool = True) -> Table:
    table = new_table("Model presets: parameter memory (GiB)",
                      [("name", "left"), ("family", "left"), ("parameters", "right"), ("fp32 / amp", "right"),
                       ("bf16 / fp16", "right")],
                      caption="amp-bf16 and amp-fp16 keep fp32 parameters" if notes else None)
    for r in rows:
        table.add_row(r["name"], r["family"], fmt.count(r["params"]), fmt.gib(r["bytes_fp32"]),
                      fmt.gib(r["bytes_bf16"]))
    return table
