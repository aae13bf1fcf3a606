"""`sgdsai profile`: bytes each optimizer needs to train a model, and how close the step's peak comes to a GPU.

A client of ``sgdsai_cli.profile``: options in, a ProfileResult out, rendered as a table, JSON, CSV
or Markdown; ``--baseline`` checks it with ``sgdsai_cli.check`` (exit 1 on a regression).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sgdsai_cli.cli import options as opt
from sgdsai_cli.cli import signals
from sgdsai_cli.cli.app import app, handle_errors, progress_bar, say, stderr, stdout
from sgdsai_cli.errors import BadInput, RegressionFound

FORMATS = ("table", "json", "csv", "markdown")
DEFAULT_TOLERANCE = "1%"

EXAMPLES = opt.epilog(
    "sgdsai profile --model llama2-7b --precision fp32            # no GPU: exact sizing on meta",
    "sgdsai profile --model gpt2 --device cuda --json out.json    # a real run on the GPU",
    "sgdsai profile --model tiny-gpt2 --device cpu --steps 5 --out run/",
    "sgdsai profile --profile profiles/tiny-ci.toml               # a named spec and its baseline",
)


@app.command("profile", epilog=EXAMPLES)
@handle_errors
def profile_command(
    model: str = opt.model_option(),
    precision: str = opt.precision_option(),
    device: str = opt.device_option("auto (CUDA if present, else meta), meta, cpu, cuda or cuda:N. [default: auto]"),
    optimizer: list[str] = opt.optimizer_option("sgdsai, sgdsai-ref, adamw, adamw-foreach, adamw-fused, adamw-loop, "
                                                "sgd, adafactor, adamw8bit, muon, muon-fused or torch:ClassName; "
                                                "repeatable. [default: sgdsai adamw adamw-fused]"),
    batch_size: str = typer.Option(None, "--batch-size", metavar="B", show_default=False,
                                   help="Micro-batch. [default: 1]"),
    seq_len: str = typer.Option(None, "--seq-len", metavar="S", show_default=False,
                                help="Sequence length (ViT uses its image size). [default: 512, or the model's "
                                     "context when shorter]"),
    warmup: str = typer.Option(None, "--warmup", metavar="W", show_default=False,
                               help="Real runs: steps before measuring. [default: 3]"),
    steps: str = typer.Option(None, "--steps", metavar="N", show_default=False,
                              help="Real runs: measured steps. [default: 10]"),
    sample_interval_ms: str = typer.Option(None, "--sample-interval-ms", metavar="T", show_default=False,
                                           help="Real runs: memory sampling period. [default: 10]"),
    json_path: Path = opt.json_option(),
    out: Path = opt.out_option("Folder for result.json and the figures."),
    output_format: str = opt.format_option(FORMATS),
    baseline: Path = typer.Option(None, "--baseline", metavar="PATH", show_default=False,
                                  help="Compare with this profile result; exit 1 on a regression."),
    tolerance: str = typer.Option(None, "--tolerance", metavar="X%", show_default=False,
                                  help=f"Allowed growth against --baseline. [default: {DEFAULT_TOLERANCE}]"),
    update_baseline: bool = typer.Option(False, "--update-baseline", help="Write this result to --baseline instead."),
    snapshot: bool = typer.Option(False, "--snapshot", help="Real CUDA runs: save a memory snapshot per optimizer."),
    name: str = typer.Option(None, "--name", metavar="NAME", show_default=False,
                             help="The model's display name in the result (check matches by it or by fingerprint)."),
    quiet: bool = opt.quiet_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print where the time went."),
    spec_file: Path = typer.Option(None, "--profile", metavar="FILE.toml", show_default=False,
                                   help="TOML run spec; command-line options override it."),
    parallel: str = typer.Option(None, "--parallel", metavar="MODE", show_default=False,
                                 help="none, fsdp2 or ddp: what one rank of an FSDP2 or DDP job holds, simulated "
                                      "with fake tensors (meta). [default: none]"),
    world_size: str = typer.Option(None, "--world-size", metavar="N", show_default=False,
                                   help="--parallel: ranks in the job. [default: 1]"),
    shard_size: str = typer.Option(None, "--shard-size", metavar="K", show_default=False,
                                   help="--parallel: ranks each tensor is sharded over; fewer than "
                                        "--world-size is HSDP. [default: all]"),
    reshard_after_forward: bool = typer.Option(None, "--reshard-after-forward/--no-reshard-after-forward",
                                               show_default=False,
                                               help="--parallel: free each block's gathered parameters "
                                                    "after its forward. [default: on]"),
    bucket_cap_mb: str = typer.Option(None, "--bucket-cap-mb", metavar="MB", show_default=False,
                                      help="--parallel ddp: DDP's gradient bucket size in MiB. [default: 25]"),
    gradient_as_bucket_view: bool = typer.Option(None, "--gradient-as-bucket-view/--no-gradient-as-bucket-view",
                                                 show_default=False,
                                                 help="--parallel ddp: gradients are views into DDP's all-reduce "
                                                      "buckets (no second copy). [default: off]"),
    nproc: str = typer.Option(None, "--nproc", metavar="N", show_default=False,
                              help="--parallel fsdp2|ddp on cpu/cuda: start N ranks here through torchrun "
                                   "(rank 0 writes the result)."),
    activation_checkpointing: str = typer.Option(None, "--activation-checkpointing", metavar="POLICY",
                                                 show_default=False,
                                                 help="none, full or every=N: recompute the blocks' activations "
                                                      "in backward (torch.utils.checkpoint). [default: none]"),
    attn_implementation: str = typer.Option(None, "--attn-implementation", metavar="A", show_default=False,
                                            help="transformers models: sdpa, eager or flash_attention_2. "
                                                 "[default: sdpa]"),
    lora: str = opt.lora_option(),
    qlora: str = opt.qlora_option(),
) -> None:
    """Bytes each optimizer needs (params, grads, state per key, activations, step transient, peak)."""
    opt.check_model_name(model)  # a misspelt model: refused before torch is imported
    from sgdsai_cli.analysis.profile import prepare_profile, run_profile
    from sgdsai_cli.analysis.specfile import load_spec_file
    from sgdsai_cli.files import check_writable
    from sgdsai_cli.units import parse_percent

    t_start = time.perf_counter()
    opt.check_format(output_format, FORMATS)
    if nproc is not None:
        args = [("--model", model), ("--precision", precision), ("--device", device),
                *[("--optimizer", o) for o in optimizer or []], ("--batch-size", batch_size), ("--seq-len", seq_len),
                ("--warmup", warmup), ("--steps", steps), ("--sample-interval-ms", sample_interval_ms),
                ("--json", json_path), ("--out", out), ("--format", output_format), ("--baseline", baseline),
                ("--tolerance", tolerance), ("--profile", spec_file), ("--parallel", parallel),
                ("--world-size", world_size), ("--shard-size", shard_size), ("--bucket-cap-mb", bucket_cap_mb),
                ("--lora", lora), ("--qlora", qlora), ("--activation-checkpointing", activation_checkpointing)]
        flags = {"--update-baseline": update_baseline, "--snapshot": snapshot, "--quiet": quiet,
                 "--verbose": verbose, "--reshard-after-forward": reshard_after_forward is True,
                 "--no-reshard-after-forward": reshard_after_forward is False,
                 "--gradient-as-bucket-view": gradient_as_bucket_view is True,
                 "--no-gradient-as-bucket-view": gradient_as_bucket_view is False}
        _launch_ranks(opt.parse_int("--nproc", nproc), parallel, device, args, [f for f, on in flags.items() if on])
        return
    if quiet and verbose:
        raise BadInput("--quiet and --verbose exclude each other")
    spec = load_spec_file(spec_file) if spec_file is not None else {}
    with _named_in_file(spec_file, ["tolerance"] if tolerance is None and "tolerance" in spec else []):
        tol = parse_percent(str(tolerance if tolerance is not None else spec.get("tolerance", DEFAULT_TOLERANCE)))
    baseline_path = baseline if baseline is not None else spec.get("baseline")
    opt.check_output_paths(json_path, out, "result.json",
                           [("--baseline", baseline_path if update_baseline else None)],
                           [("--baseline", None if update_baseline else baseline_path), ("--profile", spec_file),
                            ("--model", model)])
    baseline_result = _baseline_before_work(baseline_path, update_baseline)
    if json_path is not None:
        check_writable(json_path)
    opt.prepare_out(out, "result.json")
    options = {
        "precision": precision, "device": device, "optimizers": optimizer or None, "snapshot": snapshot or None,
        "name": name,
        "batch_size": opt.optional(opt.parse_int, "--batch-size", batch_size),
        "seq_len": opt.optional(opt.parse_int, "--seq-len", seq_len),
        "warmup": opt.optional(opt.parse_int, "--warmup", warmup, 0),
        "steps": opt.optional(opt.parse_int, "--steps", steps),
        "sample_interval_ms": opt.optional(opt.parse_positive, "--sample-interval-ms", sample_interval_ms),
        "parallel": parallel, "reshard_after_forward": reshard_after_forward,
        "world_size": opt.optional(opt.parse_int, "--world-size", world_size),
        "shard_size": opt.optional(opt.parse_int, "--shard-size", shard_size),
        "bucket_cap_mb": opt.optional(opt.parse_positive, "--bucket-cap-mb", bucket_cap_mb),
        "gradient_as_bucket_view": gradient_as_bucket_view,
        "attn_implementation": attn_implementation,
        "activation_checkpointing": activation_checkpointing,
        "lora": opt.lora_from(lora, qlora),
    }
    if spec_file is None and model is None:
        raise BadInput("missing --model (a preset name such as llama2-7b, or a config.json path)")
    from_file = [k for k in spec if {**options, "model": model, "optimizers": optimizer or None}.get(k) is None]
    with _user_traceback(verbose):
        with _named_in_file(spec_file, from_file, spec):
            plan = prepare_profile(model, spec=spec, **options)
        from sgdsai_cli.measure.parallel_real import launched_rank

        if plan.parallel is not None and (launched_rank() or 0) > 0:
            run_profile(plan)  # a torchrun rank other than 0: it trains and sends its rows to rank 0, silently
            return
        if not quiet:
            say(plan.describe)
        samples_dir = json_path.parent if (out is None and json_path is not None) else None
        with progress_bar(quiet) as on_progress:
            result = run_profile(plan, out_dir=out, samples_dir=samples_dir, on_progress=on_progress)
    with signals.shielded():  # a signal now is recorded: the result is written first
        _write_outputs(result, json_path, out, quiet)
    _print(result, output_format, quiet)
    if verbose:
        say(_timing_line(result, time.perf_counter() - t_start))
    if result.interrupted or signals.received() is not None:  # the finished runs are written above
        signals.seen()
        say(f"interrupted ({signals.name()}): finished runs kept")
        raise typer.Exit(signals.exit_code())
    if baseline_path is not None:
        _baseline(result, baseline_path, baseline_result, tol, update_baseline, quiet, output_format)


def _launch_ranks(n: int, parallel: str | None, device: str | None, args: list, flags: list[str]) -> None:
    """``--nproc N``: run this command on N ranks through torchrun; its exit status is ours."""
    from sgdsai_cli.measure.parallel_real import launch_torchrun, launched_rank

    if launched_rank() is not None:
        raise BadInput("--nproc inside a torchrun job: torchrun already started the ranks")
    if parallel not in ("fsdp2", "ddp"):
        raise BadInput("--nproc needs --parallel fsdp2 or ddp")
    if device is None or device in ("auto", "meta"):
        raise BadInput("--nproc needs --device cpu or cuda (a real run on every rank)")
    argv = [part for flag, value in args if value is not None for part in (flag, str(value))] + flags
    rc = launch_torchrun(argv, n)
    if rc:
        raise typer.Exit(rc)


class _named_in_file:
    """An error about a value that came from the ``--profile`` TOML names the file (and not a flag the
    value was not given as): ``run.toml: key 'tolerance': bad percentage '1e400' ...``."""

    def __init__(self, path, keys: list[str], spec: dict | None = None):
        self.path, self.keys, self.spec = path, keys, spec or {}

    def _key_of(self, exc) -> str | None:
        """The file's key the error is about: its field, else the key whose value the message quotes."""
        if exc.field in self.keys:
            return exc.field
        if exc.field is not None:
            return None
        if len(self.keys) == 1:
            return self.keys[0]
        for key in self.keys:
            values = self.spec.get(key)
            for v in values if isinstance(values, list) else [values]:
                if v is not None and (exc.value == v or f"'{v}'" in str(exc)):
                    return key
        return None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from sgdsai_cli.errors import SgdsaiError

        if self.path is None or not isinstance(exc, SgdsaiError) or not self.keys:
            return False
        key = self._key_of(exc)
        if key is None:
            return False
        message = f"{self.path}: {exc}" if exc.field == key else f"{self.path}: key '{key}': {exc}"
        raise type(exc)(message, value=exc.value) from None


class _user_traceback:
    """With --verbose, an error raised in the user's own model code also prints its traceback (stderr)."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        detail = getattr(exc, "detail", None)
        if self.verbose and isinstance(detail, str):
            stderr().print(detail, markup=False, highlight=False, end="")
        return False


def _baseline_before_work(path, update: bool):
    """Check the baseline path before any work: writable for --update-baseline, else a valid profile."""
    from sgdsai_cli.analysis.check import as_profile
    from sgdsai_cli.files import check_writable

    if update and path is None:
        raise BadInput("--update-baseline needs --baseline PATH (the file to write)")
    if path is None:
        return None
    if update:
        check_writable(path)
        return None
    return as_profile(path)


def _write_outputs(result, json_path: Path | None, out: Path | None, quiet: bool) -> None:
    from sgdsai_cli.render.profile_figures import write_profile_figures

    if json_path is not None:
        result.save(json_path)
        if not quiet:
            say(f"wrote {json_path}")
    if out is not None:
        result.save(out / "result.json")
        samples = {k.removeprefix("samples-"): v for k, v in result.files.items() if k.startswith("samples-")}
        write_profile_figures(result.to_dict(), out, samples)
        if not quiet:
            say(f"wrote {out / 'result.json'} and figures")


def _print(result, output_format: str, quiet: bool) -> None:
    from sgdsai_cli.files import dumps
    from sgdsai_cli.render import profile as render

    doc = result.to_dict()
    if output_format == "json":
        print(dumps(doc))
    elif output_format == "csv":
        print(render.profile_csv(doc), end="")
    elif output_format == "markdown":
        print(render.profile_markdown(doc), end="")
    else:
        console = stdout()
        items = render.profile_renderables(doc)
        if not quiet and result.spec.device != "meta":
            from sgdsai_cli.render.real import real_renderables

            items = items + real_renderables(doc)
        for item in items[:2] if quiet else items:
            console.print(item)


def _timing_line(result, wall_s: float) -> str:
    timing = result.timing_s or {}
    parts = []
    if timing.get("sizing") is not None:
        parts.append(f"sized in {timing['sizing']:.2f} s")
    if timing.get("estimate") is not None:
        parts.append(f"estimated in {timing['estimate']:.2f} s")
    details = next((r.memory.details for r in result.runs if r.memory and r.memory.details.get("traced_layers")),
                   {})
    if details:
        parts.append(f"traced {details['traced_layers']} of {details['layers']} layers "
                     f"({details.get('trace_ops', '?')} ops)")
    parts.append(f"{wall_s:.2f} s in all")
    return "timing: " + ", ".join(parts)


def _baseline(result, path, baseline_result, tol: float, update: bool, quiet: bool, output_format: str) -> None:
    from sgdsai_cli.analysis.check import compare
    from sgdsai_cli.render.check import check_table

    if update:
        result.save(path, stable=True)  # a baseline: no timestamps or timings, so regenerating diffs empty
        if not quiet:
            say(f"baseline written: {path}")
        return
    report = compare(result, baseline_result, tolerance=tol)
    console = stdout() if output_format == "table" else stderr()  # keep machine output on stdout clean
    console.print(check_table(report))
    if not report.passed:
        raise RegressionFound(report.summary())
    if not quiet:
        say(report.summary())
