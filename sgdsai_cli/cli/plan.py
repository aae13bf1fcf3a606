"""`sgdsai plan --model M [--precision P]... [--gpu NAME]... [--optimizer O]... [--batch-size B] [--seq-len S]`."""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli.app import app, handle_errors, stdout

FORMATS = ("table", "json")


@app.command("plan")
@handle_errors
def plan_command(
    model: str = typer.Option(..., "--model", "-m", help="Preset name (sgdsai presets) or a config.json path.",
                              show_default=False),
    precision: list[str] = typer.Option(None, "--precision", "-p",
                                        help="fp32, bf16, fp16, amp-bf16, amp-fp16; repeatable. "
                                             "Default: fp32 and bf16."),
    gpu: list[str] = typer.Option(None, "--gpu", "-g",
                                  help="GPU name or custom:SIZE (e.g. custom:48GiB); repeatable. Default: l4-24gb, "
                                       "rtx4090-24gb, a100-40gb, a100-80gb, h100-80gb, h200-141gb."),
    optimizer: list[str] = typer.Option(None, "--optimizer", "-o", help="Repeatable. Default: sgdsai and adamw."),
    batch_size: str = typer.Option("1", "--batch-size", help="Micro-batch per GPU."),
    seq_len: str = typer.Option("512", "--seq-len", help="Sequence length (ignored by ViT)."),
    context: str = typer.Option("1GiB", "--context", help="CUDA context allowance subtracted from each GPU."),
    json_path: Path = typer.Option(None, "--json", help="Write the plan document (kind: plan) here."),
    out: Path = typer.Option(None, "--out", help="Folder for plan.json and the plot (PNG and SVG)."),
    output_format: str = typer.Option("table", "--format", help="table or json (the document on stdout)."),
) -> None:
    """Plan GPU memory: model states, activations, fits, max batch and GPUs needed (DDP, ZeRO-1/2/3)."""
    from sgdsai_cli.analysis.gpus import resolve_gpu
    from sgdsai_cli.analysis.plan import plan_document, plan_plots, plan_table
    from sgdsai_cli.errors import BadInput, did_you_mean
    from sgdsai_cli.files import check_writable, dumps, prepare_out_dir, write_json_atomic
    from sgdsai_cli.optim.registry import resolve_optimizer
    from sgdsai_cli.precision import resolve_precision
    from sgdsai_cli.units import parse_size

    if output_format not in FORMATS:
        raise BadInput(f"unknown format '{output_format}'" + did_you_mean(output_format, FORMATS))
    batch = _positive_int("--batch-size", batch_size)
    seq = _positive_int("--seq-len", seq_len)
    context_bytes = parse_size(context)
    # validate every name and path before the (slower) sizing and estimate
    for p in precision or []:
        resolve_precision(p)
    for o in optimizer or []:
        resolve_optimizer(o)
    for g in gpu or []:
        if resolve_gpu(g).memory_bytes <= context_bytes:
            raise BadInput(f"GPU '{g}' has no memory left after the {context} context allowance")
    if json_path is not None:
        check_writable(json_path)
    if out is not None:
        prepare_out_dir(out, "plan.json")

    doc = plan_document(model, precision or None, gpu or None, optimizer or None, batch_size=batch, seq_len=seq,
                        context_bytes=context_bytes)
    if json_path is not None:
        write_json_atomic(json_path, doc)
    written = []
    if out is not None:
        written.append(write_json_atomic(out / "plan.json", doc))
        written += plan_plots(doc, out)
    if output_format == "json":
        print(dumps(doc))
        return
    console = wide_console()
    console.print(plan_table(doc))
    console.print("states = params + grads + optimizer state (exact); activ. = activation peak of forward + "
                  "backward (fake-tensor estimate);\nstep tmp = optimizer.step() temporaries; total = params + "
                  "state + max(forward/backward peak incl. grads, grads + step tmp) + context allowance;\n"
                  "DDP/ZeRO-1/2/3 = GPUs needed with one micro-batch each, '-' = no count fits. "
                  "Formulas: README, sgdsai_cli/plan.py.", highlight=False, markup=False)
    for path in ([json_path] if json_path else []) + written:
        console.print(f"wrote {path}", highlight=False, markup=False)


def wide_console(width: int = 150):
    """stdout console that is not squeezed to 80 columns when piped (CI logs, files)."""
    console = stdout()
    if not console.is_terminal:
        console.width = max(console.width, width)
    return console


def _positive_int(option: str, text: str) -> int:
    from sgdsai_cli.errors import BadInput

    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadInput(f"bad {option} '{text}' (use a whole number of 1 or more)") from None
    if value < 1:
        raise BadInput(f"bad {option} '{text}' (must be 1 or more)")
    return value
