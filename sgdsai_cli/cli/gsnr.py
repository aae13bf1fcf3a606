"""`sgdsai gsnr`: a client of ``sgdsai_cli.gsnr``: the g-SNR of every parameter tensor, and its drift."""

from __future__ import annotations

from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli.app import app, handle_errors, progress_bar, say, stdout

FORMATS = ("table", "json")
EXAMPLES = opt.epilog(
    "sgdsai gsnr --model tiny-gpt2",
    "sgdsai gsnr --model gpt2 --steps 0,20 --out gsnr/",
    "sgdsai gsnr --model tiny-llama --data my_corpus.txt --json gsnr.json --format json",
)


@app.command("gsnr", epilog=EXAMPLES)
@handle_errors
def gsnr_command(
    model: str = opt.model_option(),
    device: str = opt.device_option("auto (CUDA if available, else cpu), cpu, cuda or cuda:N. [default: auto]"),
    precision: str = opt.precision_option(),
    steps: str = typer.Option("0,10,50", "--steps", metavar="LIST",
                              help="Training steps at which to measure g-SNR, increasing; 0 is always measured."),
    optimizer: str = typer.Option("sgdsai", "--optimizer", "-o", metavar="O",
                                  help="Optimizer that trains between steps (sgdsai, adamw, ...)."),
    data: Path = typer.Option(None, "--data", metavar="PATH", show_default=False,
                              help="Text file or folder of text files (default: the Python standard library's "
                                   "sources)."),
    batch_size: str = typer.Option("4", "--batch-size", metavar="B", help="Sequences (or images) per batch."),
    seq_len: str = typer.Option(None, "--seq-len", metavar="S", show_default=False,
                                help="Tokens per sequence. [default: min(128, model positions)]"),
    seed: str = typer.Option("0", "--seed", metavar="N", help="Seed for the model init and the batches."),
    lr: str = typer.Option("1e-5", "--lr", metavar="LR", help="Learning rate of the training between steps "
                                                              "(SGD-SaI's official 1e-2 diverges on gpt2)."),
    out: Path = opt.out_option("Folder for gsnr.json, gsnr.csv and the figures (PNG and SVG)."),
    json_path: Path = opt.json_option("Write the result document here (CSV beside it)."),
    output_format: str = opt.format_option(FORMATS),
    quiet: bool = opt.quiet_option(),
) -> None:
    """g-SNR of every parameter tensor at initialisation and during training, by block type."""
    opt.check_model_name(model)  # a misspelt model: refused before torch is imported
    from sgdsai_cli.analysis.gsnr import gsnr, parse_steps
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.files import check_writable, dumps
    from sgdsai_cli.render.gsnr import gsnr_renderables

    opt.check_format(output_format, FORMATS)
    if model is None:
        raise BadInput("missing --model (a preset name such as tiny-gpt2, or a config.json path)")
    bs = opt.parse_int("--batch-size", batch_size)
    sl = opt.optional(opt.parse_int, "--seq-len", seq_len)
    seed_value = opt.parse_int("--seed", seed, -(2**63))
    lr_value = opt.parse_positive("--lr", lr)
    parse_steps(steps)  # fail before any work
    csv_path = None
    if json_path is not None:
        check_writable(json_path)
        if out is None:  # the per-tensor CSV goes beside the JSON
            csv_path = Path(json_path).with_suffix(".csv")
            if csv_path == Path(json_path):
                raise BadInput(f"--json '{json_path}': the per-tensor CSV would overwrite it (name it *.json)")
            check_writable(csv_path)
    opt.check_output_paths(json_path, out, "gsnr.json",
                           [("--json's CSV", csv_path), (f"--out '{out}'", Path(out) / "gsnr.csv" if out else None)],
                           [("--model", model), ("--data", data)])
    out_dir = opt.prepare_out(out, "gsnr.json")

    with progress_bar(quiet) as on_progress:
        result = gsnr(model, device=device or "auto", precision=precision or "fp32", steps=steps, optimizer=optimizer,
                      data=data, batch_size=bs, seq_len=sl, seed=seed_value, lr=lr_value, on_progress=on_progress)
    doc = result.to_dict()
    written = _write(result, json_path, csv_path, out_dir)
    if output_format == "json":
        print(dumps(doc))
    else:
        console = stdout()
        for item in gsnr_renderables(doc, quiet=quiet):
            console.print(item)
    if not quiet:
        for path in written:
            say(f"wrote {path}")


def _write(result, json_path: Path | None, csv_path: Path | None, out_dir: Path | None) -> list[Path]:
    """The JSON document, the per-tensor CSV and (with ``out_dir``) the figures; the paths written."""
    from sgdsai_cli.files import write_text_atomic
    from sgdsai_cli.render.gsnr import tensors_csv
    from sgdsai_cli.render.gsnr_figures import gsnr_plots

    doc = result.to_dict()
    written = []
    if json_path is not None:
        written.append(result.save(json_path))
    if csv_path is not None:
        written.append(write_text_atomic(csv_path, tensors_csv(doc)))
    if out_dir is not None:
        written.append(result.save(out_dir / "gsnr.json"))
        written.append(write_text_atomic(out_dir / "gsnr.csv", tensors_csv(doc)))
        written += gsnr_plots(doc, out_dir)
    return written
