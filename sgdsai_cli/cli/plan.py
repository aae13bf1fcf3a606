"""`sgdsai plan`: a client of ``sgdsai_cli.plan``: which GPU, how many, and how large a batch."""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors, progress_bar, say, stdout

FORMATS = ("table", "json")
EXAMPLES = opt.epilog(
    "sgdsai plan --model llama2-7b",
    "sgdsai plan --model llama2-13b --precision bf16 --gpu h100-80gb --gpu custom:48GiB --batch-size 4",
    "sgdsai plan --model gpt2-xl --out plan/ --format json",
)


@app.command("plan", epilog=EXAMPLES)
@handle_errors
def plan_command(
    model: str = opt.model_option(),
    precision: list[str] = opt.precision_option("fp32, bf16, fp16, amp-bf16, amp-fp16; repeatable. "
                                                "[default: fp32 bf16]"),
    gpu: list[str] = typer.Option(None, "--gpu", "-g", metavar="NAME", show_default=False,
                                  help="GPU name or custom:SIZE (e.g. custom:48GiB); repeatable. [default: l4-24gb, "
                                       "rtx4090-24gb, a100-40gb, a100-80gb, h100-80gb, h200-141gb]"),
    optimizer: list[str] = opt.optimizer_option("Repeatable. [default: sgdsai adamw]"),
    batch_size: str = typer.Option("1", "--batch-size", metavar="B", help="Micro-batch per GPU."),
    seq_len: str = typer.Option("512", "--seq-len", metavar="S", help="Sequence length (ignored by ViT)."),
    context: str = typer.Option(None, "--context", metavar="SIZE", show_default=False,
                                help="CUDA context allowance subtracted from every GPU. [default: each card's "
                                     "own: measured on the H100, the H100 figure assumed elsewhere]"),
    parallel: str = typer.Option("none", "--parallel", metavar="MODE",
                                 help="fsdp2: also the fewest FSDP2 ranks per GPU from the per-rank simulation "
                                      "(slower: one simulation per world size tried)."),
    activation_checkpointing: str = typer.Option("none", "--activation-checkpointing", metavar="POLICY",
                                                 help="none, full or every=N: plan with the blocks' activations "
                                                      "recomputed in backward."),
    lora: str = opt.lora_option(),
    qlora: str = opt.qlora_option(),
    fit: bool = typer.Option(None, "--fit/--no-fit", show_default=False,
                             help="The ladder of recipes per GPU and optimizer (full fp32, bf16, + checkpointing, "
                                  "LoRA, LoRA + checkpointing) with the largest batch each allows, or the GiB "
                                  "missing. [default: with --gpu, for the cards nothing fits on]"),
    json_path: Path = opt.json_option("Write the plan document (kind: plan) here."),
    out: Path = opt.out_option("Folder for plan.json and the plot (PNG and SVG)."),
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """Plan GPU memory: model states, activations, fits, max batch and GPUs needed (DDP, ZeRO-1/2/3)."""
    opt.check_model_name(model)  # a misspelt model: refused before torch is imported
    from sgdsai_cli.analysis.plan import plan
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.files import check_writable, dumps
    from sgdsai_cli.render.plan import NOTES, fsdp2_table, plan_table
    from sgdsai_cli.render.plan_figures import write_plan_figures
    from sgdsai_cli.render.plan_fit import fit_hint, fit_summary, fit_table
    from sgdsai_cli.units import parse_size

    opt.check_format(output_format, FORMATS)
    if model is None:
        raise BadInput("missing --model (a preset name such as llama2-7b, or a config.json path)")
    batch = opt.parse_int("--batch-size", batch_size)
    seq = opt.parse_int("--seq-len", seq_len)
    context_bytes = parse_size(context) if context is not None else None
    if json_path is not None:
        check_writable(json_path)
    opt.check_output_paths(json_path, out, "plan.json", inputs=[("--model", model)])
    opt.prepare_out(out, "plan.json")
    with progress_bar(quiet) as on_progress:
        result = plan(model, precision or None, gpu or None, optimizer or None, batch_size=batch, seq_len=seq,
                      context_bytes=context_bytes, parallel=parallel,
                      activation_checkpointing=activation_checkpointing, lora=opt.lora_from(lora, qlora),
                      fit=("auto" if gpu else False) if fit is None else fit, on_progress=on_progress)
    written = []
    if json_path is not None:
        written.append(result.save(json_path))
    if out is not None:
        written.append(result.save(out / "plan.json"))
        written += write_plan_figures(result.to_dict(), out)
    if output_format == "json":
        print(dumps(result))
        return
    console = stdout()
    console.print(plan_table(result.to_dict()))
    fsdp2 = fsdp2_table(result.to_dict())
    if fsdp2 is not None:
        console.print(fsdp2)
    fit_rows = fit_table(result.to_dict())
    if fit_rows is not None:
        console.print(fit_rows)
        for line in fit_summary(result.to_dict()):
            console.print(line, highlight=False, markup=False)
    elif fit is None and not quiet:
        lost = fit_hint(result.to_dict())
        if lost:
            say(lost)
    if not quiet:
        console.print(NOTES, highlight=False, markup=False)
        for path in written:
            say(f"wrote {path}")
