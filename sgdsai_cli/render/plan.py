"""The plan table: per optimizer, precision and GPU, the memory, whether it fits and the GPUs needed."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sgdsai_cli.analysis.plan import MAX_BATCH_LIMIT, STRATEGIES
from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import fits_cell, new_table

NOTES = ("states = params + grads + optimizer state (exact); activ. = activation peak of forward + backward "
         "(fake-tensor estimate);\nstep tmp = optimizer.step() temporaries; total = the CUDA caching allocator's "
         "predicted reserved peak (allocated: params + state + max(forward/backward peak incl. grads, batch + "
         "grads + step tmp), rounded into segments) + the card's context allowance;\nDDP/ZeRO-1/2/3 = GPUs "
         "needed with one micro-batch each, by formula (not simulated), '-' = no count fits; '!' = impractical: "
         "the replicated part leaves\nunder 10% of the card for the shards, or over 1024 GPUs. Formulas: "
         "docs/planning.md.")
HEADER = ["optimizer", "precision", "gpu", "usable", "states", "activ.", "step tmp", "total", "fits",
          "max batch", "DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3"]


def _batch(n: int | None) -> str:
    if n is None:
        return fmt.MISSING
    return f">={n:,}" if n >= MAX_BATCH_LIMIT else fmt.count(n)


def plan_cells(row: dict[str, Any]) -> list[Any]:
    """One row's cells; 'fits' stays a boolean (each renderer draws it its own way)."""
    need = row.get("gpus_needed") or {}
    impractical = row.get("gpus_needed_impractical") or {}
    return [
        f"{row['optimizer']}/{row['impl']}" if row.get("impl") else row["optimizer"], row["precision"], row["gpu"],
        fmt.gib(row["usable_bytes"]), fmt.gib(row["model_state_bytes"]), fmt.gib(row["activation_bytes"]),
        fmt.gib(row.get("step_transient_bytes") or 0), fmt.gib(row["total_bytes"]), row["fits"],
        _batch(row.get("max_batch_size")), *(_count(need.get(k), k in impractical) for k in STRATEGIES),
    ]


def _count(n: int | None, impractical: bool) -> str:
    return fmt.count(n) + ("!" if impractical and n is not None else "")


def plan_table_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Header and text cells (GiB; fits as yes/no), for the Markdown and HTML report."""
    rows = []
    for row in doc.get("rows", []):
        cells = plan_cells(row)
        cells[8] = fmt.yes_no(cells[8])
        rows.append(cells)
    return list(HEADER), rows


def plan_title(doc: dict) -> str:
    spec = doc.get("spec", {})
    ctx = (doc.get("assumptions") or {}).get("context_bytes")
    ctx_text = f", CUDA context allowance {fmt.size(ctx)}" if ctx is not None else ", each card's context allowance"
    batch = f"batch {spec.get('batch_size')} x seq {spec.get('seq_len')}"
    return f"plan: {spec.get('model')}, {batch}{ctx_text}; sizes in GiB"


def plan_table(doc: dict) -> Table:
    """The plan as a rich Table; a red 'no' where one GPU does not fit."""
    table = new_table(plan_title(doc), [(h, "left" if i < 3 else "right") for i, h in enumerate(HEADER)])
    for row in doc.get("rows", []):
        cells = plan_cells(row)
        cells[8] = fits_cell(cells[8])
        table.add_row(*cells)
    return table


FSDP2_HEADER = ["optimizer", "precision", "gpu", "FSDP2 ranks", "per-rank params", "grads", "state", "step peak",
                "max batch/rank", "note"]


def fsdp2_table(doc: dict) -> Table | None:
    """``plan --parallel fsdp2``: per GPU the fewest ranks and what one rank holds (GiB); None without it."""
    rows = doc.get("fsdp2_rows")
    if not rows:
        return None
    spec = doc.get("spec", {})
    table = new_table(f"FSDP2, simulated per rank: {spec.get('model')}, batch {spec.get('batch_size')} per rank; "
                      "sizes in GiB", [(h, "left" if i < 3 or i == 9 else "right") for i, h in enumerate(FSDP2_HEADER)])
    for r in rows:
        sizes = [fmt.gib(r[k]) if r.get(k) is not None else fmt.MISSING
                 for k in ("rank_param_bytes", "rank_grad_bytes", "rank_state_bytes", "rank_peak_bytes")]
        ranks = fmt.count(r["gpus_needed"]) if r.get("gpus_needed") is not None else fmt.MISSING
        table.add_row(f"{r['optimizer']}/{r['impl']}" if r.get("impl") else r["optimizer"], r["precision"], r["gpu"],
                      ranks, *sizes, _batch(r.get("max_batch_per_rank")), r.get("reason") or "")
    return table
