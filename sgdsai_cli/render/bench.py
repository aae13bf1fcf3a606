"""The bench-step table: per optimizer, ms per step, GB/s, share of copy bandwidth, ratio to fused AdamW."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from sgdsai_cli.measure.bench_result import BenchResult, BenchRow
from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import new_table

COLUMNS = ("optimizer", "impl", "ms/step", "min", "max", "first step ms", "GB/s", "of copy bw", "vs adamw-fused",
           "ratio range")


def _header(result: BenchResult) -> str:
    spec, dev, tensors = result.spec, result.environment.device, result.tensors
    layers = "all layers" if spec.layers is None else f"first {spec.layers} layer(s)"
    threads = f", {dev['threads']} threads" if dev.get("threads") else ""
    return (f"optimizer step on {spec.model} shapes ({layers}: {fmt.count(tensors.params)} parameters in "
            f"{tensors.count} tensors), {spec.precision}, {spec.device} ({dev.get('name')}{threads}); "
            f"medians of {spec.steps} interleaved rounds after {spec.warmup} warm-up")


def _cells(r: BenchRow) -> list[str]:
    if r.status != "ok":
        return [r.optimizer, r.impl or fmt.MISSING, r.status, "", "", "", "", "", "", r.error or ""]
    step = r.step_ms or {}
    rng = r.ratio_range
    return [r.optimizer, r.impl or fmt.MISSING, fmt.fixed(step.get("p50"), 2), fmt.fixed(step.get("min"), 2),
            fmt.fixed(step.get("max"), 2), fmt.fixed(r.first_step_ms, 1), fmt.fixed(r.gb_per_s, 1),
            fmt.pct(r.bandwidth_fraction, 0), fmt.fixed(r.ratio_to_adamw_fused, 3),
            fmt.MISSING if rng is None else f"{rng[0]:.2f}-{rng[1]:.2f}"]


def bench_table(result: BenchResult):
    table = new_table(None, [(c, "left" if c in ("optimizer", "impl") else "right") for c in COLUMNS])
    for r in result.rows:
        table.add_row(*_cells(r))
    return table


def bench_renderables(result: BenchResult, *, quiet: bool = False) -> list[Any]:
    """Header, one table row per optimizer, the copy bandwidth (only the table when quiet)."""
    if quiet:
        return [bench_table(result)]
    copy = result.copy
    footer = (f"copy bandwidth: {fmt.fixed(copy.gb_per_s, 1)} GB/s (copy_ of {fmt.size(copy.bytes)}, "
              f"median {fmt.fixed(copy.ms.get('p50'), 2)} ms, read + write); GB/s counts the bytes the update must "
              "move (SGD-SaI 5, AdamW 7 tensors per parameter)")
    warnings = [Text(f"warning: {r.optimizer}: {r.details['spread_warning']}", style="yellow")
                for r in result.rows if r.details.get("spread_warning")]
    return [Text(_header(result)), bench_table(result), Text(footer), *warnings]
