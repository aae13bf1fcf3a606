"""``profile()``: the bytes (and, on a real device, the time) each optimizer needs to train a model.

    result = profile(model="llama2-7b", precision="fp32")                 # no GPU: exact sizing on meta
    result = profile(model="tiny-gpt2", device="cpu", steps=5, out_dir="run")   # a real run
    result = profile(spec_file="profiles/tiny-ci.toml", precision="bf16")   # a TOML spec, overridden

The policy lives here, once: the defaults of every option, how a TOML spec and explicit arguments
combine (an explicit argument wins), what ``device="auto"`` means (the first CUDA device, else meta:
exact sizing with no GPU), and the dispatch to meta sizing or to real runs. Every input is checked
before any work; a problem is a BadInput carrying the field and the value.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput
from sgdsai_cli.optim.registry import DEFAULT_OPTIMIZERS, resolve_optimizer
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.progress import ProgressCallback
from sgdsai_cli.results import ProfileResult, ProfileSpec

DEFAULT_SEQ_LEN = 512  # tokens; a model with a shorter context uses its whole context (tiny-gpt2: 128)


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile; every default is defined here and nowhere else (the CLI shows these)."""

    model: Any = None  # a preset name, a config.json path / folder / cached hub id, "module:factory", or a callable
    precision: str = "fp32"  # fp32, bf16, fp16, amp-bf16, amp-fp16
    device: str = "auto"  # auto (first CUDA device, else meta), meta, cpu, cuda, cuda:N
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    batch_size: int = 1  # micro-batch
    seq_len: int | None = None  # None: DEFAULT_SEQ_LEN, or the model's whole context when shorter
    warmup: int = 3  # real runs: steps before measuring (the CPU always runs at least 3, the first among them)
    steps: int = 10  # real runs: measured steps
    sample_interval_ms: float = 10.0  # real runs: memory sampling period
    seed: int = 0
    snapshot: bool = False  # real CUDA runs: a memory snapshot per optimizer (needs out_dir)
    name: str | None = None  # the display name recorded (None: the preset name, or the config path normalised)
    activation_checkpointing: str = "none"  # none, full, every=N: torch.utils.checkpoint on the repeated blocks
    lora: Any = None  # LoRA through peft: "r=16,alpha=32,targets=q_proj,v_proj", a peft adapter_config.json; None
    parallel: str = "none"  # none, fsdp2 or ddp: what one rank holds, simulated on meta (measure.parallel)
    world_size: int = 1  # ranks of the --parallel job
    shard_size: int | None = None  # ranks a tensor is sharded over (None: all; fewer: HSDP)
    reshard_after_forward: bool = True  # FSDP2 frees each block's gathered parameters after its forward
    bucket_cap_mb: float | None = None  # DDP's gradient bucket size in MiB (None: DDP's default, 25)
    gradient_as_bucket_view: bool | None = None  # DDP: gradients are views into the buckets (None: off)
    attn_implementation: str | None = None  # transformers models: sdpa (None: the default), eager, flash_attention_2

    def merged(self, overrides: dict[str, Any]) -> ProfileRequest:
        """This request with the non-None entries of ``overrides`` (known fields only)."""
        names = {f.name for f in fields(self)}
        given = {k: (tuple(v) if k == "optimizers" else v) for k, v in overrides.items()
                 if k in names and v is not None}
        return replace(self, **given)


@dataclass
class ProfilePlan:
    """A checked request: the model, the spec to record, the optimizers, the real-run options."""

    model_spec: Any
    spec: ProfileSpec
    optimizers: list[str]
    sample_interval_ms: float
    snapshot: bool
    name: str | None = None  # the display name to record (None: measure.identity.display_name's default)
    parallel: Any = None  # a measure.parallel.ParallelConfig for --parallel fsdp2, else None

    @property
    def describe(self) -> str:
        """'sizing gpt2 (fp32) on the meta device: sgdsai, adamw' or 'training gpt2 (fp32) on cpu: ...'."""
        verb = "sizing" if self.spec.device == "meta" else "training"
        where = "the meta device" if self.spec.device == "meta" else self.spec.device
        if self.parallel is not None and self.spec.device == "meta":
            verb, where = "simulating", f"rank 0 of {self.parallel.world_size} ({self.parallel.kind}, fake tensors)"
        elif self.parallel is not None:
            where = f"{self.spec.device}, every rank of this torchrun job ({self.parallel.kind})"
        return f"{verb} {self.spec.model} ({self.spec.precision}) on {where}: {', '.join(self.optimizers)}"


def prepare_profile(model: str | None = None, *, spec: dict[str, Any] | None = None, **options: Any) -> ProfilePlan:
    """Merge defaults, a loaded TOML spec (``specfile.load_spec_file``) and ``options`` (an explicit
    non-None option wins), and check every field (no work yet)."""
    unknown = set(options) - {f.name for f in fields(ProfileRequest)}
    if unknown:
        name = sorted(unknown)[0]
        raise BadInput(f"unknown profile option '{name}'", field=name)
    request = ProfileRequest().merged(spec or {})
    return check_request(request.merged({"model": model, **options}))


def profile(model: str | None = None, *, spec_file: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, samples_dir: str | os.PathLike | None = None,
            on_progress: ProgressCallback | None = None, **options: Any) -> ProfileResult:
    """Profile ``model`` with each optimizer; the typed result (``to_dict()`` = the JSON document).

    ``options`` are the fields of ``ProfileRequest`` (precision, device, optimizers, batch_size,
    seq_len, warmup, steps, sample_interval_ms, seed, snapshot). ``spec_file`` is a TOML run spec;
    explicit arguments override it. Real runs write their samples CSVs to ``samples_dir`` (default
    ``out_dir``) and snapshots to ``out_dir``; the paths are in ``result.files``.
    """
    from sgdsai_cli.analysis.specfile import load_spec_file

    spec = load_spec_file(spec_file) if spec_file is not None else None
    plan = prepare_profile(model, spec=spec, **options)
    return run_profile(plan, out_dir=out_dir, samples_dir=samples_dir, on_progress=on_progress)


def run_profile(plan: ProfilePlan, *, out_dir: str | os.PathLike | None = None,
                samples_dir: str | os.PathLike | None = None,
                on_progress: ProgressCallback | None = None) -> ProfileResult:
    """Do the work of a prepared profile: meta sizing, or one real run per optimizer; under torchrun with
    ``parallel``, a real run on every rank, whose document rank 0 returns (the other ranks: None)."""
    if plan.parallel is not None and plan.spec.device != "meta":
        from sgdsai_cli.measure.parallel_real import run_ranks

        result = run_ranks(plan.spec, plan.model_spec, plan.optimizers, plan.parallel)  # None on ranks > 0
        return _named(result, plan.name) if result is not None else None
    if plan.parallel is not None:
        from sgdsai_cli.measure.parallel_profile import simulate_profile

        return _named(simulate_profile(plan.spec, plan.model_spec, plan.optimizers, plan.parallel,
                                       on_progress=on_progress), plan.name)
    if plan.spec.device == "meta":
        from sgdsai_cli.measure.sizing import size_profile

        return _named(size_profile(plan.spec, plan.model_spec, plan.optimizers, estimate=True,
                                   on_progress=on_progress), plan.name)
    from sgdsai_cli.measure.realrun import run_real

    out = Path(out_dir) if out_dir is not None else None
    real = run_real(plan.spec, plan.model_spec, plan.optimizers, sample_interval_ms=plan.sample_interval_ms,
                    out_dir=out, samples_dir=Path(samples_dir) if samples_dir is not None else out,
                    snapshot=plan.snapshot, on_progress=on_progress)
    real.result.files.update({f"samples-{name}": path for name, path in real.samples_csv.items()})
    return _named(real.result, plan.name)


def _named(result: ProfileResult, name: str | None) -> ProfileResult:
    """``result`` shown under ``name`` when one was asked for."""
    if name:
        result.model.name = name
    return result


def check_request(request: ProfileRequest) -> ProfilePlan:
    """Validate every field (BadInput with the field and value, EnvironmentUnavailable for the device)."""
    from sgdsai_cli.measure.devices import resolve_device
    from sgdsai_cli.models import make_batch, resolve_model

    if request.model is None:
        raise BadInput("no model given (a preset name such as llama2-7b, or a config.json path)", field="model")
    model_spec = resolve_model(request.model, attn_implementation=request.attn_implementation)
    from sgdsai_cli.models.checkpointing import parse_policy
    from sgdsai_cli.models.lora import parse_lora

    checkpointing = parse_policy(request.activation_checkpointing)
    lora = parse_lora(request.lora)
    if checkpointing != "none" or lora is not None:
        model_spec = replace(model_spec, checkpointing=checkpointing, lora=lora)
    precision = resolve_precision(request.precision)
    if not request.optimizers:
        raise BadInput("no optimizers to profile", field="optimizers")
    for name in request.optimizers:
        resolve_optimizer(name)
    seq_len = request.seq_len if request.seq_len is not None else default_seq_len(model_spec)
    for name, value, minimum in (("batch_size", request.batch_size, 1), ("seq_len", seq_len, 1),
                                 ("warmup", request.warmup, 0), ("steps", request.steps, 1)):
        _check_int(name, value, minimum)
    from sgdsai_cli.measure.limits import check_steps_and_warmup

    check_steps_and_warmup(request.steps, request.warmup)
    interval = request.sample_interval_ms
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
            or interval <= 0:
        raise BadInput(f"bad sample_interval_ms {interval!r} (must be greater than zero)",
                       field="sample_interval_ms", value=interval)
    make_batch(model_spec, request.batch_size, seq_len, device="meta")  # shape errors (seq_len > positions) now
    device = str(resolve_device(request.device, auto="meta"))
    if device != "meta":
        from sgdsai_cli.models import check_reimportable

        check_reimportable(model_spec)  # a real run builds the model again in its child process
    spec = ProfileSpec(model=model_spec.name, precision=precision.name, device=device,
                       batch_size=request.batch_size, seq_len=seq_len, warmup=request.warmup,
                       steps=request.steps, seed=request.seed)
    name = request.name
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200
                             or any(not c.isprintable() for c in name)):
        raise BadInput(f"bad name {name!r} (a non-empty printable text of at most 200 characters)",
                       field="name", value=name)
    if checkpointing != "none":  # recorded, so a baseline re-runs the same recipe
        spec.extra["activation_checkpointing"] = checkpointing
    if lora is not None:
        spec.extra["lora"] = lora.text()
    if request.attn_implementation not in (None, "sdpa"):  # recorded, so a baseline re-runs the same attention
        spec.extra["attn_implementation"] = request.attn_implementation
    return ProfilePlan(model_spec, spec, list(request.optimizers), float(interval), request.snapshot,
                       name=name.strip() if name else None, parallel=_check_parallel(request, device))


def _check_parallel(request: ProfileRequest, device: str):
    """The ParallelConfig of ``--parallel fsdp2|ddp`` (simulated on meta; real under torchrun), or None."""
    from sgdsai_cli.measure.parallel import check_parallel

    cfg = check_parallel(request.parallel, request.world_size, request.shard_size, request.reshard_after_forward,
                         request.bucket_cap_mb, request.gradient_as_bucket_view)
    if cfg.kind == "none":
        return None
    for given, what in ((request.lora, "--lora"), (resolve_precision(request.precision).master_dtype, "bf16-master")):
        if given is not None:  # the per-rank simulation and real ranks shard every parameter and a plain optimizer
            raise BadInput(f"{what} with --parallel {cfg.kind} is not simulated yet: profile it on one device",
                           field="parallel", value=cfg.kind)
    if device != "meta":
        from sgdsai_cli.measure.parallel_real import launched_rank

        if launched_rank() is None:
            raise BadInput(f"--parallel {cfg.kind} --device {device} is a real multi-rank run: start it with "
                           "torchrun --nproc-per-node N -m sgdsai_cli profile ... (or simulate it on --device meta)",
                           field="device", value=device)
    return cfg


def default_seq_len(model_spec) -> int:
    """DEFAULT_SEQ_LEN, or the model's whole context when it is shorter."""
    positions = getattr(model_spec.config, "n_positions", None)
    if model_spec.family == "hf":
        from sgdsai_cli.models import max_positions

        positions = max_positions(model_spec)
    return min(DEFAULT_SEQ_LEN, positions) if positions else DEFAULT_SEQ_LEN


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"bad {name} {value!r} (must be a whole number)", field=name, value=value)
    if value < minimum:
        raise BadInput(f"bad {name} {value!r} (must be at least {minimum})", field=name, value=value)
