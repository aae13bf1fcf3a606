"""A parallel job's profile side by side, rank by rank: one table per optimizer, one column per rank.

    tables = rank_tables(doc)   # [] for a document without per-rank rows

A profile document of ``profile --parallel fsdp2|ddp`` has rows with ``rank``, ``world_size`` and
``parallel``: every rank of a torchrun job (measured), or rank 0 alone (simulated: ``rank 0 of N``).
Each table holds what each rank holds (parameters, gradients, state, DDP's buckets, the step peak,
the steady step's peak above the resident bytes), its status and its median step time, plus a
``spread`` column (largest minus smallest over the ranks) where there is more than one rank. The
document's ``parallel`` object (layout, straggler spread) is summarised in ``rank_notes``. Every
number reaches a cell through ``render.format``.
"""

from __future__ import annotations

from typing import Any

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.report_pages import Table

# (row label, how to read it from a run)
ROWS = (
    ("status", lambda r: r.get("status")),
    ("parameters", lambda r: _memory(r, "param_bytes")),
    ("gradients", lambda r: _memory(r, "grad_bytes")),
    ("state", lambda r: _memory(r, "state_bytes")),
    ("DDP buckets", lambda r: _detail(r, "ddp_bucket_bytes")),
    ("gradients beside the buckets", lambda r: _detail(r, "separate_grad_bytes")),
    ("step peak (measured)", lambda r: _memory(r, "peak_allocated_bytes")),
    ("step peak (simulated)", lambda r: _memory(r, "estimated_peak_bytes")),
    ("steady step above resident", lambda r: _detail(r, "steady_step_peak_bytes")),
    ("step p50 (ms)", lambda r: ((r.get("latency_ms") or {}).get("step") or {}).get("p50")),
)


def _memory(run: dict, key: str) -> Any:
    return (run.get("memory") or {}).get(key)


def _detail(run: dict, key: str) -> Any:
    return ((run.get("memory") or {}).get("details") or {}).get(key)


def ranked_runs(doc: dict) -> dict[str, list[dict]]:
    """optimizer -> its runs in rank order (only runs that carry a rank)."""
    out: dict[str, list[dict]] = {}
    for run in doc.get("runs") or []:
        if isinstance(run.get("rank"), int):
            out.setdefault(run.get("optimizer") or "?", []).append(run)
    return {name: sorted(runs, key=lambda r: r["rank"]) for name, runs in out.items()}


def _cell(label: str, value: Any) -> str:
    if label == "status":
        return fmt.cell(value)
    if label.endswith("(ms)"):
        return fmt.ms(value)
    return fmt.size(value)


def _spread(label: str, values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if label == "status" or len(numbers) < 2:
        return fmt.MISSING
    return _cell(label, max(numbers) - min(numbers))


def rank_tables(doc: dict) -> list[Table]:
    """Per optimizer: a row per figure, a column per rank (and the spread over ranks); [] without ranks."""
    tables = []
    for name, runs in ranked_runs(doc).items():
        world = runs[0].get("world_size")
        mode = runs[0].get("parallel") or "parallel"
        columns = [f"rank {r['rank']}" + (f" of {world}" if len(runs) == 1 and world else "") for r in runs]
        many = len(runs) > 1
        header = [f"{name} ({mode})", *columns] + (["spread"] if many else [])
        rows = []
        for label, read in ROWS:
            values = [read(r) for r in runs]
            if all(v is None for v in values):
                continue
            rows.append([label, *(_cell(label, v) for v in values)] + ([_spread(label, values)] if many else []))
        caption = (f"Per rank: {name}, {mode}, {len(runs)} of {world} ranks" if world else f"Per rank: {name}")
        tables.append(Table(caption, header, rows, [False] + [True] * (len(header) - 1)))
    return tables


def rank_notes(doc: dict) -> list[str]:
    """One line on the job's layout and, for a measured job, the straggler spread per optimizer."""
    layout = doc.get("parallel") or {}
    if not layout or not ranked_runs(doc):
        return []
    parts = [f"{layout.get('kind')} over {fmt.count(layout.get('world_size'))} ranks"]
    if layout.get("kind") == "ddp":
        parts.append(f"{fmt.cell(layout.get('bucket_cap_mb'))} MiB buckets, gradient_as_bucket_view "
                     f"{'on' if layout.get('gradient_as_bucket_view') else 'off'}")
    elif layout.get("shard_size") is not None:
        parts.append(f"sharded over {fmt.count(layout.get('shard_size'))} ({fmt.count(layout.get('replicas'))} "
                     "replicas), reshard after "
                     f"forward {'on' if layout.get('reshard_after_forward', True) else 'off'}")
    if "rank" in layout:  # the simulation: one rank
        parts.append(f"rank {layout['rank']} simulated on fake tensors")
    lines = ["parallel job: " + ", ".join(parts)]
    spread = layout.get("straggler_spread") or {}
    if spread:
        lines.append("straggler spread (slowest - fastest) / fastest median step: "
                     + ", ".join(f"{k} {fmt.pct(v)}" for k, v in spread.items()))
    return lines
