"""`sgdsai profile`: bytes each optimizer needs to train a model, and how close the step's peak comes to a GPU.

    sgdsai profile --model llama2-7b --precision fp32            # no GPU: exact sizing on meta
    sgdsai profile --model gpt2 --device cuda --json out.json    # a real run on the GPU
    sgdsai profile --profile profiles/ci.toml --baseline profiles/baselines/ci.json

Every input is validated before any work (exit 2); ``--device cuda`` without CUDA exits 3;
``--baseline`` exits 1 when a figure grew beyond ``--tolerance``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import typer

from sgdsai_cli.cli.app import app, handle_errors, stderr, stdout
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, RegressionFound, did_you_mean

FORMATS = ("table", "json", "csv", "markdown")

# --profile FILE.toml keys -> expected type (the option names with underscores)
TOML_KEYS: dict[str, type | tuple] = {
    "model": str,
    "precision": str,
    "device": str,
    "optimizers": list,
    "batch_size": int,
    "seq_len": int,
    "warmup": int,
    "steps": int,
    "sample_interval_ms": (int, float),
    "tolerance": (str, int, float),
    "baseline": str,
}


_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", list: "a list"}


def load_profile_toml(path: str | Path) -> dict[str, Any]:
    """Read a run spec: a TOML table of option names (underscores); BadInput naming the file and key."""
    import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read ({e.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise BadInput(f"{path}: not valid TOML (nested too deeply)") from None
    for key, value in data.items():
        expected = TOML_KEYS.get(key)
        if expected is None:
            raise BadInput(f"{path}: unknown key '{key}'" + did_you_mean(key, TOML_KEYS))
        if isinstance(value, bool) or not isinstance(value, expected):
            types = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
            raise BadInput(f"{path}: key '{key}' must be {names}, got {value!r}")
        if key == "optimizers" and not all(isinstance(o, str) for o in value):
            raise BadInput(f"{path}: key 'optimizers' must be a list of names, got {value!r}")
    if "baseline" in data:
        data["baseline"] = _relative_to(p, data["baseline"])
    return data


def _relative_to(toml_path: Path, value: str) -> str:
    """A relative path in a TOML spec: beside the TOML file if it is there (or can be written
    there), else as given (relative to the working folder)."""
    given = Path(value)
    if given.is_absolute():
        return value
    beside = toml_path.parent / given
    for candidate in (beside, given):
        if candidate.exists():
            return str(candidate)
    for candidate in (beside, given):
        if candidate.parent.is_dir():
            return str(candidate)
    return value


def _int(option: str, value: Any, minimum: int = 1) -> int:
    text = str(value).strip()
    try:
        n = int(text)
    except ValueError:
        raise BadInput(f"bad {option} '{value}' (must be a whole number)") from None
    if n < minimum:
        raise BadInput(f"bad {option} '{value}' (must be at least {minimum})")
    return n


def _float(option: str, value: Any) -> float:
    try:
        x = float(str(value).strip())
    except ValueError:
        raise BadInput(f"bad {option} '{value}' (must be a number)") from None
    if not math.isfinite(x) or x <= 0:
        raise BadInput(f"bad {option} '{value}' (must be greater than zero)")
    return x


def resolve_device(device: str) -> str:
    """auto -> cuda (first GPU) when there is one, else meta; cuda without CUDA -> EnvironmentUnavailable."""
    text = str(device).strip().lower()
    if text == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "meta"
    if text in ("meta", "cpu"):
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise BadInput(f"bad device '{device}' (use cuda or cuda:N)")
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentUnavailable(f"device '{device}' asked for, but CUDA is not available on this machine "
                                         "(use --device meta for exact sizing without a GPU)")
        if index and int(index) >= torch.cuda.device_count():
            raise EnvironmentUnavailable(f"device '{device}' does not exist "
                                         f"(this machine has {torch.cuda.device_count()} CUDA devices)")
        return text
    raise BadInput(f"unknown device '{device}'" + did_you_mean(text, ("auto", "meta", "cpu", "cuda", "cuda:N")))


def _pick(cli: Any, config: dict, key: str, default: Any) -> Any:
    if cli is not None and cli != []:
        return cli
    return config.get(key, default)


@app.command("profile")
@handle_errors
def profile_command(
    model: str = typer.Option(None, "--model", "-m", metavar="M", show_default=False,
                              help="Preset name (sgdsai presets) or a config.json path."),
    precision: str = typer.Option(None, "--precision", "-p", metavar="P", show_default=False,
                                  help="fp32, bf16, fp16, amp-bf16 or amp-fp16. [default: fp32]"),
    device: str = typer.Option(None, "--device", "-d", metavar="D", show_default=False,
                               help="auto (CUDA if present, else meta), meta, cpu, cuda or cuda:N. [default: auto]"),
    optimizer: list[str] = typer.Option(None, "--optimizer", "-o", metavar="O", show_default=False,
                                        help="sgdsai, sgdsai-ref, adamw, adamw-foreach, adamw-fused, adamw-loop, sgd, "
                                             "adafactor or torch:ClassName; repeatable. [default: sgdsai adamw]"),
    batch_size: str = typer.Option(None, "--batch-size", metavar="B", show_default=False,
                                   help="Micro-batch. [default: 1]"),
    seq_len: str = typer.Option(None, "--seq-len", metavar="S", show_default=False,
                                help="Sequence length (ViT uses its image size). [default: 512]"),
    warmup: str = typer.Option(None, "--warmup", metavar="W", show_default=False,
                               help="Real runs: steps before measuring. [default: 3]"),
    steps: str = typer.Option(None, "--steps", metavar="N", show_default=False,
                              help="Real runs: measured steps. [default: 10]"),
    sample_interval_ms: str = typer.Option(None, "--sample-interval-ms", metavar="T", show_default=False,
                                           help="Real runs: memory sampling period. [default: 10]"),
    json_path: Path = typer.Option(None, "--json", metavar="PATH", show_default=False,
                                   help="Write the result document (schema 1) here."),
    out: Path = typer.Option(None, "--out", metavar="DIR", show_default=False,
                             help="Folder for result.json and the figures."),
    output_format: str = typer.Option("table", "--format", metavar="F",
                                      help="table, json, csv or markdown (on stdout)."),
    baseline: Path = typer.Option(None, "--baseline", metavar="PATH", show_default=False,
                                  help="Compare with this profile result; exit 1 on a regression."),
    tolerance: str = typer.Option(None, "--tolerance", metavar="X%", show_default=False,
                                  help="Allowed growth against --baseline. [default: 1%]"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="Write this result to --baseline instead."),
    snapshot: bool = typer.Option(False, "--snapshot", help="Real CUDA runs: save a memory snapshot per optimizer."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the result: no progress, no notes."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print where the time went."),
    profile: Path = typer.Option(None, "--profile", metavar="FILE.toml", show_default=False,
                                 help="TOML run spec; command-line options override it."),
) -> None:
    """Bytes each optimizer needs (params, grads, state per key, activations, step transient, peak)."""
    from sgdsai_cli.files import check_writable, prepare_out_dir
    from sgdsai_cli.models import make_batch, resolve_model
    from sgdsai_cli.optim.registry import DEFAULT_OPTIMIZERS, resolve_optimizer
    from sgdsai_cli.precision import resolve_precision
    from sgdsai_cli.results import ProfileSpec
    from sgdsai_cli.schema import load_document
    from sgdsai_cli.units import parse_percent

    t_start = time.perf_counter()
    config = load_profile_toml(profile) if profile is not None else {}
    where = f" (in {profile})" if profile is not None else ""

    # ---- validate everything before any work
    if output_format not in FORMATS:
        raise BadInput(f"unknown format '{output_format}'" + did_you_mean(output_format, FORMATS))
    if quiet and verbose:
        raise BadInput("--quiet and --verbose exclude each other")
    model_name = _pick(model, config, "model", None)
    if model_name is None:
        raise BadInput("missing --model (a preset name such as llama2-7b, or a config.json path)")
    model_spec = resolve_model(model_name)
    prec = resolve_precision(_pick(precision, config, "precision", "fp32"))
    optimizers = list(_pick(optimizer, config, "optimizers", list(DEFAULT_OPTIMIZERS)))
    if not optimizers:
        raise BadInput(f"no optimizers to profile{where}")
    for name in optimizers:
        resolve_optimizer(name)
    spec_batch = _int("--batch-size", _pick(batch_size, config, "batch_size", 1))
    # Default 512 tokens, or the model's whole context when it is shorter (tiny-gpt2: 128).
    max_positions = getattr(model_spec.config, "n_positions", None)
    default_seq = min(512, max_positions) if max_positions else 512
    spec_seq = _int("--seq-len", _pick(seq_len, config, "seq_len", default_seq))
    spec_warmup = _int("--warmup", _pick(warmup, config, "warmup", 3), minimum=0)
    spec_steps = _int("--steps", _pick(steps, config, "steps", 10))
    interval = _float("--sample-interval-ms", _pick(sample_interval_ms, config, "sample_interval_ms", 10))
    tol = parse_percent(str(_pick(tolerance, config, "tolerance", "1%")))
    baseline_path = _pick(baseline, config, "baseline", None)
    baseline_doc = None
    if update_baseline and baseline_path is None:
        raise BadInput("--update-baseline needs --baseline PATH (the file to write)")
    if baseline_path is not None:
        if update_baseline:
            check_writable(baseline_path)
        else:
            baseline_doc = load_document(baseline_path, kinds=("profile",))
    if json_path is not None:
        check_writable(json_path)
    if out is not None:
        prepare_out_dir(out, "result.json")
    make_batch(model_spec, spec_batch, spec_seq, device="meta")  # shape errors (seq_len > positions) now
    dev = resolve_device(_pick(device, config, "device", "auto"))

    spec = ProfileSpec(model=model_spec.name, precision=prec.name, device=dev, batch_size=spec_batch,
                       seq_len=spec_seq, warmup=spec_warmup, steps=spec_steps)
    err = stderr()

    # ---- the work
    if dev == "meta":
        from sgdsai_cli.measure.sizing import profile_meta

        if not quiet:
            err.print(f"sizing {model_spec.name} ({prec.name}) on the meta device: "
                      f"{', '.join(optimizers)}", markup=False, highlight=False)
        doc = profile_meta(spec, model_spec, optimizers, estimate=True)
    else:
        try:
            from sgdsai_cli.measure.realrun import profile_real
        except ImportError:
            raise BadInput("real runs (--device cpu/cuda) are not built yet") from None
        samples_dir = json_path.parent if (out is None and json_path is not None) else None
        doc = profile_real(spec, model_spec, optimizers, sample_interval_ms=interval, out_dir=out,
                           snapshot=snapshot, quiet=quiet, samples_dir=samples_dir)

    # ---- outputs
    _write_outputs(doc, json_path, out, dev, quiet, err)
    _print(doc, output_format, quiet)
    if verbose:
        err.print(_timing_line(doc, time.perf_counter() - t_start), markup=False, highlight=False)
    if doc.get("interrupted"):  # Ctrl-C: the finished runs are written above
        err.print("interrupted: finished runs kept", markup=False, highlight=False)
        raise typer.Exit(130)
    if baseline_path is not None:
        _baseline(doc, baseline_path, baseline_doc, tol, update_baseline, quiet, output_format, err)


def _write_outputs(doc: dict, json_path: Path | None, out: Path | None, device: str, quiet: bool, err) -> None:
    from sgdsai_cli.files import write_json_atomic

    if json_path is not None:
        write_json_atomic(json_path, doc)
        if not quiet:
            err.print(f"wrote {json_path}", markup=False, highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "result.json", doc)
        if device == "meta":  # real runs draw their own figures (with the memory samples)
            try:
                from sgdsai_cli.render.profile_figures import profile_plots
            except ImportError:
                profile_plots = None
            if profile_plots is not None:
                profile_plots(doc, out)
        if not quiet:
            err.print(f"wrote {out / 'result.json'} and figures", markup=False, highlight=False)


def _print(doc: dict, output_format: str, quiet: bool) -> None:
    from sgdsai_cli.files import dumps
    from sgdsai_cli.render import profile as render

    if output_format == "json":
        print(dumps(doc))
    elif output_format == "csv":
        print(render.profile_csv(doc), end="")
    elif output_format == "markdown":
        print(render.profile_markdown(doc), end="")
    else:
        console = stdout()
        items = render.profile_renderables(doc)
        if not quiet and doc.get("spec", {}).get("device", "meta") != "meta":
            from sgdsai_cli.render.real import real_renderables

            items = items + real_renderables(doc)
        for item in items[:2] if quiet else items:
            console.print(item)


def _timing_line(doc: dict, wall_s: float) -> str:
    timing = doc.get("timing_s") or {}
    parts = []
    if timing.get("sizing") is not None:
        parts.append(f"sized in {timing['sizing']:.2f} s")
    if timing.get("estimate") is not None:
        parts.append(f"estimated in {timing['estimate']:.2f} s")
    details = next((((r.get("memory") or {}).get("details") or {}) for r in doc.get("runs", [])
                    if ((r.get("memory") or {}).get("details") or {}).get("traced_layers")), {})
    if details:
        parts.append(f"traced {details['traced_layers']} of {details['layers']} layers "
                     f"({details.get('trace_ops', '?')} ops)")
    parts.append(f"{wall_s:.2f} s in all")
    return "timing: " + ", ".join(parts)


def _baseline(doc, path, baseline_doc, tol, update, quiet, output_format, err) -> None:
    from sgdsai_cli.files import write_json_atomic

    if update:
        write_json_atomic(path, doc)
        if not quiet:
            err.print(f"baseline written: {path}", markup=False, highlight=False)
        return
    try:
        from sgdsai_cli.analysis.check import check_table, compare_documents
    except ImportError:
        raise BadInput("--baseline: 'sgdsai check' is not built yet") from None
    report = compare_documents(doc, baseline_doc, tolerance=tol)
    console = stdout() if output_format == "table" else err  # keep machine output on stdout clean
    console.print(check_table(report))
    if not report.passed:
        raise RegressionFound(report.summary())
    if not quiet:
        err.print(report.summary(), markup=False, highlight=False)
