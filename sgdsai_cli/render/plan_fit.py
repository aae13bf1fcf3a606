"""``plan --fit``: per GPU, the recipes that fit and their largest batch, one column per optimizer."""

from __future__ import annotations

from rich.table import Table

from sgdsai_cli.analysis.plan import MAX_BATCH_LIMIT
from sgdsai_cli.analysis.plan_fit import first_fit
from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import new_table


def _cell(row: dict) -> str:
    """'batch 26' where it fits, 'short 3.20' (GiB lacking at batch 1) where it does not."""
    if row["fits"]:
        n = row["max_batch_size"]
        return f"batch >={n:,}" if n >= MAX_BATCH_LIMIT else f"batch {n:,}"
    return f"short {fmt.gib(row['short_bytes'])}"


def fit_table(doc: dict) -> Table | None:
    """The ladder as a table (None without ``fit_rows``): GPU, recipe, trainable parameters, one cell per optimizer."""
    rows = doc.get("fit_rows")
    if not rows:
        return None
    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    spec = doc.get("spec", {})
    table = new_table(f"what fits: {spec.get('model')}, seq {spec.get('seq_len')}; largest batch, or GiB short at "
                      f"batch {spec.get('batch_size')}",
                      [("gpu", "left"), ("recipe", "left"), ("trainable", "right"),
                       *((o, "right") for o in optimizers)])
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["gpu"], r["recipe"]), {})[r["optimizer"]] = r
    for (gpu, recipe), by_opt in cells.items():
        first = next(iter(by_opt.values()))
        table.add_row(gpu, recipe, fmt.count(first["trainable_params"]),
                      *(_cell(by_opt[o]) if o in by_opt else fmt.MISSING for o in optimizers))
    return table


def fit_summary(doc: dict) -> list[str]:
    """One line per GPU and optimizer: the most faithful recipe that fits, or how much the leanest lacks."""
    lines = []
    for (gpu, optimizer), r in first_fit(doc.get("fit_rows") or []).items():
        if r["fits"]:
            lines.append(f"{gpu}, {optimizer}: fits from '{r['recipe']}' (batch up to {r['max_batch_size']:,})")
        else:
            lines.append(f"{gpu}, {optimizer}: nothing fits; '{r['recipe']}' lacks {fmt.size(r['short_bytes'])}")
    return lines


def fit_hint(doc: dict) -> str | None:
    """For a plan without the ladder: the cards on which no row fits, and how to ask what would (None: none)."""
    cards = list(dict.fromkeys(r["gpu"] for r in doc.get("rows", [])))
    lost = [g for g in cards if not any(r["fits"] for r in doc.get("rows", []) if r["gpu"] == g)]
    if not lost:
        return None
    return (f"nothing fits on {', '.join(lost)}: --fit (or --gpu {lost[0]}) lists the recipes that do "
            "(checkpointing, LoRA, QLoRA) with their batch sizes")
