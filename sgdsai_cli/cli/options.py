"""Options and parsers that several commands share: one spelling, one short flag, one help text each.

Short flags mean the same in every command: -m --model, -p --precision, -d --device,
-o --optimizer, -q --quiet, -v --verbose. Metavars are upper-case words (M, P, D, O, PATH, DIR).
Numbers arrive as text and are parsed here, so a bad one names its flag.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from sgdsai_cli.errors import BadInput, did_you_mean


def model_option(help: str = "Preset name (sgdsai presets) or a config.json path."):
    return typer.Option(None, "--model", "-m", metavar="M", show_default=False, help=help)


def precision_option(help: str = "fp32, bf16, fp16, amp-bf16 or amp-fp16. [default: fp32]"):
    return typer.Option(None, "--precision", "-p", metavar="P", show_default=False, help=help)


def device_option(help: str):
    return typer.Option(None, "--device", "-d", metavar="D", show_default=False, help=help)


def optimizer_option(help: str):
    return typer.Option(None, "--optimizer", "-o", metavar="O", show_default=False, help=help)


def lora_option():
    return typer.Option(None, "--lora", metavar="SPEC", show_default=False,
                        help="LoRA through peft, base frozen: r=16,alpha=32,targets=q_proj,v_proj[,dropout=0.05]"
                             "[,dtype=bf16], or a peft adapter_config.json. [default: full training]")


def qlora_option():
    return typer.Option(None, "--qlora", metavar="SPEC", show_default=False,
                        help="QLoRA: --lora with the base's linear layers in bitsandbytes 4-bit (nf4, double quant; "
                             "quant=fp4, double_quant=false to change). [default: off]")


def lora_from(lora, qlora):
    """The adapter of ``--lora`` or ``--qlora`` (one of them at most), as a LoraSpec or None."""
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.models.lora import parse_lora, parse_qlora

    if lora is not None and qlora is not None:
        raise BadInput("--lora and --qlora exclude each other (--qlora is --lora with a 4-bit base)")
    return parse_qlora(qlora) if qlora is not None else parse_lora(lora)


def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="Only the result: no progress, no notes.")


def format_option(choices: tuple[str, ...]):
    return typer.Option("table", "--format", metavar="F", help=f"{', '.join(choices)} (on stdout).")


def json_option(help: str = "Write the result document (JSON, schema 1) here."):
    return typer.Option(None, "--json", metavar="PATH", show_default=False, help=help)


def out_option(help: str):
    return typer.Option(None, "--out", metavar="DIR", show_default=False, help=help)


def check_format(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadInput(f"unknown format '{value}'" + did_you_mean(value, choices))
    return value


def parse_int(flag: str, text: object, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` from an option's text."""
    raw = str(text).strip()
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"bad {flag} {str(text)!r} (must be a whole number)") from None
    if value < minimum:
        raise BadInput(f"bad {flag} {str(text)!r} (must be at least {minimum})")
    return value


def parse_positive(flag: str, text: object) -> float:
    """A finite number greater than zero from an option's text."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise BadInput(f"bad {flag} {str(text)!r} (must be a number)") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"bad {flag} {str(text)!r} (must be greater than zero)")
    return value


def optional(parse, flag: str, text, *args):
    """``parse(flag, text, *args)``, or None when the option was not given."""
    return None if text is None else parse(flag, text, *args)


def epilog(*examples: str) -> str:
    """The 'Examples' block at the end of a command's --help."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {e}" for e in examples)


def prepare_out(out: Path | None, first_file: str) -> Path | None:
    """Create ``out`` (checked writable) before any work; a command that fails removes it again when it
    created it and it is still empty (``app.handle_errors``)."""
    from sgdsai_cli.cli.app import created_folders
    from sgdsai_cli.files import prepare_out_dir

    if out is None:
        return None
    missing = []
    folder = Path(out).absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    prepared = prepare_out_dir(out, first_file)
    created_folders.extend(reversed(missing))  # outermost first: removed innermost first
    return prepared


FIGURE_SUFFIXES = (".png", ".svg", ".csv", ".pickle")  # figures, samples and snapshots written into --out


def check_output_paths(json_path: Path | None, out: Path | None, out_file: str, outputs: list = (),
                       inputs: list = ()) -> None:
    """Before any work: no two outputs are one file, no output is an input (``inputs``: ``(flag, path)``;
    a value that is not an existing file, such as a preset name, is skipped), and ``--json`` is not a
    file that ``--out`` writes (``out_file`` or a figure)."""
    import os

    from sgdsai_cli.files import check_distinct, check_not_inside

    check_distinct([("--json", json_path), (f"--out '{out}'", Path(out) / out_file if out is not None else None),
                    *outputs],
                   [(flag, p) for flag, p in inputs if p is not None and os.path.isfile(p)])
    check_not_inside("--json", json_path, out, "--out", (out_file,), FIGURE_SUFFIXES)


def check_model_name(model) -> None:
    """Refuse a model name that names nothing (BadInput, exit 2) before the command imports torch."""
    if isinstance(model, str):
        from sgdsai_cli.models.names import model_source

        model_source(model)
