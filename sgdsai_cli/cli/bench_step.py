"""`sgdsai bench-step --model M [--device D] [--precision P] [--optimizer O]... [--layers N]
[--warmup W] [--steps N] [--json PATH] [--format table|json]`.

Times one optimizer step on parameter and gradient tensors shaped like the model (no model,
no activations), every optimizer interleaved with the others and with a copy that measures the
device's bandwidth in the same run. Exit 2 for bad input, 3 when the tensors do not fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")


def _int(option: str, text: str | None, minimum: int) -> int | None:
    from sgdsai_cli.errors import BadInput

    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"bad {option} '{text}' (must be an integer >= {minimum})") from None
    if value < minimum:
        raise BadInput(f"bad {option} '{text}' (must be an integer >= {minimum})")
    return value


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(doc: dict, console) -> None:
    """Header line, one table row per optimizer, and the copy bandwidth."""
    from rich.table import Table

    from sgdsai_cli.measure.bench import rows_table

    spec, dev, tensors, copy = doc["spec"], doc["environment"]["device"], doc["tensors"], doc["copy"]
    layers = "all layers" if spec["layers"] is None else f"first {spec['layers']} layer(s)"
    threads = f", {dev['threads']} threads" if dev.get("threads") else ""
    console.print(
        f"optimizer step on {spec['model']} shapes ({layers}: {tensors['params']:,} parameters in "
        f"{tensors['count']} tensors), {spec['precision']}, {spec['device']} ({dev.get('name')}{threads}); "
        f"medians of {spec['steps']} interleaved rounds after {spec['warmup']} warm-up",
        highlight=False, markup=False)
    table = Table(title_justify="left")
    for col in ("optimizer", "impl", "ms/step", "min", "max", "first step ms", "GB/s", "of copy bw",
                "vs adamw-fused", "ratio range"):
        table.add_column(col, justify="left" if col in ("optimizer", "impl") else "right", no_wrap=True)
    for r in rows_table(doc):
        if r["status"] != "ok":
            table.add_row(r["optimizer"], r["impl"] or "-", r["status"], "", "", "", "", "", "", r["error"] or "")
            continue
        rng = r["ratio_range"]
        table.add_row(r["optimizer"], r["impl"] or "-", _f(r["step_ms_p50"], ".2f"), _f(r["step_ms_min"], ".2f"),
                      _f(r["step_ms_max"], ".2f"), _f(r["first_step_ms"], ".1f"), _f(r["gb_per_s"], ".1f"),
                      _f(r["bandwidth_fraction"], ".0%"), _f(r["ratio_to_adamw_fused"], ".3f"),
                      "-" if rng is None else f"{rng[0]:.2f}-{rng[1]:.2f}")
    console.print(table)
    console.print(f"copy bandwidth: {copy['gb_per_s']:.1f} GB/s (copy_ of {copy['bytes'] / 2**20:.0f} MiB, "
                  f"median {copy['ms']['p50']:.2f} ms, read + write); GB/s counts the bytes the update must move "
                  "(SGD-SaI 5, AdamW 7 tensors per parameter)", highlight=False, markup=False)


@app.command("bench-step")
@handle_errors
def bench_step_command(
    model: str = typer.Option(..., "--model", "-m", help="Preset name (sgdsai presets) or a config.json path.",
                              show_default=False),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (params, grads, state)."),
    optimizer: list[str] = typer.Option(None, "--optimizer", "-o",
                                        help="Repeatable: sgdsai, sgdsai:compiled|fused|foreach|loop, adamw-fused, "
                                             "adamw-foreach, adamw, sgd, ... [default: sgdsai, adamw-fused, "
                                             "adamw-foreach].", show_default=False),
    layers: str = typer.Option(None, "--layers", help="Only the first N decoder layers' tensors (no embeddings) "
                                                      "[default: the whole model].", show_default=False),
    warmup: str = typer.Option("3", "--warmup", help="Warm-up rounds after the first step."),
    steps: str = typer.Option("11", "--steps", help="Measured rounds (each optimizer steps once per round)."),
    json_path: Path = typer.Option(None, "--json", help="Write the result document here.", show_default=False),
    fmt: str = typer.Option("table", "--format", help="table or json (the document on stdout)."),
) -> None:
    """Time the optimizer step alone: ms/step, GB/s, share of copy bandwidth, ratio to fused AdamW."""
    from sgdsai_cli.errors import BadInput, did_you_mean
    from sgdsai_cli.files import check_writable, dumps, write_json_atomic
    from sgdsai_cli.measure.bench import DEFAULT_OPTIMIZERS, BenchSpec, bench_document, check_optimizer

    if fmt not in FORMATS:
        raise BadInput(f"unknown format '{fmt}'" + did_you_mean(fmt, FORMATS))
    spec = BenchSpec(
        model=model, device=device, precision=precision,
        optimizers=tuple(check_optimizer(o) for o in optimizer) if optimizer else DEFAULT_OPTIMIZERS,
        layers=_int("--layers", layers, 1), warmup=_int("--warmup", warmup, 0), steps=_int("--steps", steps, 1),
    )
    if json_path is not None:
        check_writable(json_path)

    err = None
    if sys.stderr.isatty():
        from rich.console import Console

        err = Console(stderr=True)

    def progress(message: str) -> None:
        if err is not None:
            err.print(f"{message:<60}", end="\r", highlight=False, markup=False)

    doc = bench_document(spec, on_event=progress)
    if err is not None:
        err.print(" " * 60, end="\r")
    if json_path is not None:
        write_json_atomic(json_path, doc)
    if fmt == "json":
        print(dumps(doc))
        return
    console = stdout()
    if not console.is_terminal:
        console.width = max(console.width, 150)
    render(doc, console)
    if json_path is not None:
        console.print(f"wrote {json_path}", highlight=False, markup=False)
