"""`sgdsai gsnr --model M [--device D] [--precision P] [--steps LIST] [--optimizer O] [--data PATH]
[--batch-size B] [--seq-len S] [--seed N] [--lr LR] [--out DIR] [--json PATH]`.

Prints the per-block-type g-SNR table, the degenerate tensors and the stability figure;
writes the JSON document (--json), the per-tensor CSV (in --out, else beside --json)
and the four figures as PNG and SVG (--out). Exit 2 for bad input, 3 when the device
cannot do it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from sgdsai_cli.cli.app import app, handle_errors, stdout


def _positive_int(option: str, text: str | None) -> int | None:
    from sgdsai_cli.errors import BadInput

    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"bad {option} '{text}' (must be a positive integer)") from None
    if value <= 0:
        raise BadInput(f"bad {option} '{text}' (must be a positive integer)")
    return value


def _prepare_out(out: Path | None) -> Path | None:
    from sgdsai_cli.files import prepare_out_dir

    return None if out is None else prepare_out_dir(out, "gsnr.json")


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def render(doc: dict, console) -> None:
    """Print the g-SNR summary of a document: header, per-type table, degenerate tensors, stability."""
    from rich.table import Table

    spec, model, data, training = doc["spec"], doc["model"], doc["data"], doc["training"]
    device = doc["environment"]["device"]
    console.print(
        f"g-SNR of {model['name']} ({model['params']:,} parameters in {model['param_tensors']} tensors), "
        f"{spec['precision']}, {spec['device']} ({device.get('name')}), {training['optimizer']} "
        f"({training['impl']}, lr {training['lr']}), {training['steps_run']} steps in {training['seconds']:.1f} s",
        highlight=False, markup=False)
    if data["kind"] == "text":
        console.print(f"data: {data['bytes']:,} bytes of real text from {data['source']} ({data['files']} files), "
                      f"byte tokens, batch {spec['batch_size']} x {spec['seq_len']}", highlight=False, markup=False)
    else:
        console.print(f"data: synthetic images ({data['source']}), batch {spec['batch_size']}",
                      highlight=False, markup=False)
    steps = spec["steps"]
    table = Table(title=f"g-SNR at step 0 by block type; change: largest of any tensor, step {steps[0]} -> "
                        f"{steps[-1]}", title_justify="left")
    for col in ("block type", "tensors", "elements", "degen.", "min", "median", "max",
                "/sqrt(n-1) med", "/sqrt(n-1) max", "max change"):
        table.add_column(col, justify="left" if col == "block type" else "right", no_wrap=True)
    for row in doc["summary"]:
        table.add_row(row["block_type"], str(row["tensors"]), f"{row['elements']:,}", str(row["degenerate"]),
                      _num(row["gsnr_min"]), _num(row["gsnr_median"]), _num(row["gsnr_max"]),
                      _ratio(row["ratio_median"]), _ratio(row["ratio_max"]), _pct(row["max_rel_change"]))
    console.print(table)
    if doc["degenerate"]:
        deg = Table(title="degenerate tensors (step 0)", title_justify="left")
        for col in ("tensor", "elements", "reason", "what SGDSaI does"):
            deg.add_column(col, no_wrap=col != "what SGDSaI does")
        for d in doc["degenerate"]:
            deg.add_row(d["name"], f"{d['numel']:,}", d["reason"], d["sgdsai_action"])
        console.print(deg)
    else:
        console.print("degenerate tensors: none (every tensor has >1 element and a non-constant gradient)",
                      highlight=False)
    st = doc["stability"]
    if st["max_rel_change"] is not None:
        console.print(
            f"stability: from step {st['first_step']} to {st['last_step']} the g-SNR of {st['tensors_compared']} "
            f"tensors changed by a median {_pct(st['median_rel_change'])}, at most {_pct(st['max_rel_change'])} "
            f"({st['max_rel_change_tensor']})", highlight=False, markup=False)
    losses = training["loss_by_step"]
    console.print("loss: " + ", ".join(f"step {k} {_num(v)}" for k, v in losses.items()), highlight=False)
    if training.get("diverged_at_step") is not None:
        console.print(f"warning: training diverged (non-finite loss) at step {training['diverged_at_step']}; "
                      "later steps have no values: try a smaller --lr", highlight=False, markup=False)
    check = doc["checks"].get("sgdsai_state_equal")
    if check:
        verdict = "equal" if check["equal"] else f"NOT equal for {check['mismatched']}"
        console.print(f"check: SGDSaI's stored g-SNR after its first step is {verdict} to these step-0 values "
                      f"({check['compared']} tensors)", highlight=False)


@app.command("gsnr")
@handle_errors
def gsnr_command(
    model: str = typer.Option(..., "--model", "-m", help="Preset name (sgdsai presets) or a config.json path.",
                              show_default=False),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, fp16, amp-bf16 or amp-fp16."),
    steps: str = typer.Option("0,10,50", "--steps",
                              help="Training steps at which to measure g-SNR, increasing; 0 is always measured."),
    optimizer: str = typer.Option("sgdsai", "--optimizer", help="Optimizer that trains between steps "
                                                                 "(sgdsai, adamw, ...)."),
    data: Path = typer.Option(None, "--data", help="Text file or folder of text files "
                                                   "(default: the Python standard library's sources).",
                              show_default=False),
    batch_size: str = typer.Option("4", "--batch-size", help="Sequences (or images) per batch."),
    seq_len: str = typer.Option(None, "--seq-len", help="Tokens per sequence [default: min(128, model positions)].",
                                show_default=False),
    seed: str = typer.Option("0", "--seed", help="Seed for the model init and the batches."),
    lr: str = typer.Option("1e-5", "--lr", help="Learning rate of the training between steps "
                                                "(SGD-SaI's official 1e-2 diverges on gpt2, 1e-3 and 1e-4 too)."),
    out: Path = typer.Option(None, "--out", help="Folder for gsnr.json, gsnr.csv and the figures (PNG and SVG).",
                             show_default=False),
    json_path: Path = typer.Option(None, "--json", help="Write the result document here (CSV beside it).",
                                   show_default=False),
) -> None:
    """g-SNR of every parameter tensor at initialisation and during training, by block type."""
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.files import check_writable, write_json_atomic, write_text_atomic

    bs = _positive_int("--batch-size", batch_size)
    sl = _positive_int("--seq-len", seq_len)
    try:
        seed_value = int(seed)
    except ValueError:
        raise BadInput(f"bad --seed '{seed}' (must be an integer)") from None
    try:
        lr_value = float(lr)
    except ValueError:
        raise BadInput(f"bad --lr '{lr}' (must be a positive number such as 1e-5)") from None
    if not (math.isfinite(lr_value) and lr_value > 0):
        raise BadInput(f"bad --lr '{lr}' (must be a positive number such as 1e-5)")
    from sgdsai_cli.analysis.gsnr import analyse, parse_steps, tensors_csv

    parse_steps(steps)  # fail before any work
    if json_path is not None:
        check_writable(json_path)
        if out is None:  # the per-tensor CSV goes beside the JSON
            csv_path = Path(json_path).with_suffix(".csv")
            if csv_path == Path(json_path):
                raise BadInput(f"--json '{json_path}': the per-tensor CSV would overwrite it (name it *.json)")
            check_writable(csv_path)
    out_dir = _prepare_out(out)

    console = stdout()
    if not console.is_terminal:
        console.width = max(console.width, 132)
    err = None
    if sys.stderr.isatty():
        from rich.console import Console

        err = Console(stderr=True)

    def progress(k: int, last: int) -> None:
        if err is not None and (k == last or k % max(1, last // 20) == 0):
            err.print(f"training step {k}/{last}", end="\r", highlight=False)

    doc = analyse(model, device=device, precision=precision, steps=steps, optimizer=optimizer, data=data,
                  batch_size=bs, seq_len=sl, seed=seed_value, lr=lr_value,
                  progress=progress)
    if err is not None:
        err.print(" " * 40, end="\r")
    render(doc, console)

    written = []
    if json_path is not None:
        written.append(write_json_atomic(json_path, doc))
    if out_dir is not None:
        written.append(write_json_atomic(out_dir / "gsnr.json", doc))
        written.append(write_text_atomic(out_dir / "gsnr.csv", tensors_csv(doc)))
        from sgdsai_cli.render.gsnr_figures import gsnr_plots

        written += gsnr_plots(doc, out_dir)
    elif json_path is not None:
        written.append(write_text_atomic(Path(json_path).with_suffix(".csv"), tensors_csv(doc)))
    for path in written:
        console.print(f"wrote {path}", highlight=False, markup=False)
