"""`sgdsai bench-step`: a client of ``sgdsai_cli.bench_step``: how fast is one optimizer step?

Times one optimizer step on parameter and gradient tensors shaped like the model (no model, no
activations), every optimizer interleaved with the others and with a copy that measures the
device's bandwidth in the same run. Exit 2 for bad input, 3 when the tensors do not fit.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors, progress_bar, say, stdout

FORMATS = ("table", "json")
EXAMPLES = opt.epilog(
    "sgdsai bench-step --model gpt2",
    "sgdsai bench-step --model llama2-7b --layers 4 --device cuda --precision bf16",
    "sgdsai bench-step --model gpt2 --device cpu --threads 1   # steadier on a shared machine",
    "sgdsai bench-step --model gpt2 -o sgdsai:compiled -o sgdsai:foreach -o adamw-fused --json bench.json",
)


@app.command("bench-step", epilog=EXAMPLES)
@handle_errors
def bench_step_command(
    model: str = opt.model_option(),
    device: str = opt.device_option("auto (CUDA if available, else cpu), cpu, cuda or cuda:N. [default: auto]"),
    precision: str = opt.precision_option("fp32, bf16 or fp16 (params, grads, state). [default: fp32]"),
    optimizer: list[str] = opt.optimizer_option("Repeatable: sgdsai, sgdsai:compiled|fused|foreach|loop, adamw-fused, "
                                                "adamw-foreach, adamw, sgd, ... [default: sgdsai, adamw-fused, "
                                                "adamw-foreach]"),
    layers: str = typer.Option(None, "--layers", metavar="N", show_default=False,
                               help="Only the first N decoder layers' tensors (no embeddings). [default: the whole "
                                    "model]"),
    warmup: str = typer.Option("3", "--warmup", metavar="W", help="Warm-up rounds after the first step."),
    steps: str = typer.Option("11", "--steps", metavar="N", help="Measured rounds (each optimizer steps once per "
                                                                "round)."),
    threads: str = typer.Option(None, "--threads", metavar="N", show_default=False,
                                help="CPU: torch threads for the measurement (1 gives the steadiest figure on a "
                                     "shared machine). [default: torch's setting, OMP_NUM_THREADS]"),
    json_path: Path = opt.json_option(),
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """Time the optimizer step alone: ms/step, GB/s, share of copy bandwidth, ratio to fused AdamW."""
    opt.check_model_name(model)  # a misspelt model: refused before torch is imported
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.files import check_writable, dumps
    from sgdsai_cli.measure.bench import DEFAULT_OPTIMIZERS, BenchSpec, bench_step, check_optimizer
    from sgdsai_cli.render.bench import bench_renderables

    opt.check_format(output_format, FORMATS)
    if model is None:
        raise BadInput("missing --model (a preset name such as gpt2, or a config.json path)")
    spec = BenchSpec(
        model=model, device=device or "auto", precision=precision or "fp32",
        optimizers=tuple(check_optimizer(o) for o in optimizer) if optimizer else DEFAULT_OPTIMIZERS,
        layers=opt.optional(opt.parse_int, "--layers", layers), warmup=opt.parse_int("--warmup", warmup, 0),
        steps=opt.parse_int("--steps", steps), threads=opt.optional(opt.parse_int, "--threads", threads),
    )
    if json_path is not None:
        check_writable(json_path)
    with progress_bar(quiet) as on_progress:
        result = bench_step(spec, on_progress=on_progress)
    if json_path is not None:
        result.save(json_path)
    if output_format == "json":
        print(dumps(result))
        return
    console = stdout()
    for item in bench_renderables(result, quiet=quiet):
        console.print(item)
    if json_path is not None and not quiet:
        say(f"wrote {json_path}")
