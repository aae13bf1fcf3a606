"""Optimizer-step benchmark (``bench-step``): ms per step, bytes moved, copy bandwidth.

    result = bench_step(BenchSpec(model="llama2-7b", device="cuda", layers=4))   # a BenchResult
    result.to_dict()                                                              # the JSON document

Only parameter and gradient tensors shaped like a preset are built (no model, no activations),
so a llama2-7b's step can be timed where its training could not run. Every optimizer (and
every SGD-SaI implementation asked for) updates the same parameters with the same gradients;
each keeps its own state. Steps are interleaved: each measured round runs every optimizer once
(in a rotated order) plus one large ``copy_`` that measures the device's copy bandwidth in the
same conditions, so a ratio compares timings taken side by side on a noisy machine.

    bytes_per_step   the traffic the update needs at minimum (source "formula"): the registry's
                     tensors moved per parameter (``optim.registry.tensors_moved``: SGD-SaI and SGD
                     with momentum 5, AdamW 7) x parameters x bytes per element.
    gb_per_s         bytes_per_step / median step time.
    copy bandwidth   2 * bytes / median time of ``dst.copy_(src)`` (a read and a write).
    ratio            median over rounds of (this step time / adamw-fused step time, same round).

Times are summarised by ``stats.latency_summary`` (p50 = the median). On a CPU a plain copy also
reads the destination's cache lines before writing them, so a kernel that reads what it writes
can exceed the copy's figure (bandwidth_fraction > 1). On a CPU each row records the torch
``threads`` in ``details`` and, when its step times or per-round ratios vary widely,
``details["spread_warning"]`` (``stats.spread_warning``: the figure is noise, and how to get a
stable one). ``spec.threads`` sets torch's threads for the measurement on a CPU (restored after;
the spec as run records the threads used). ``steps`` and ``warmup`` are at most ``limits.MAX_STEPS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, did_you_mean
from sgdsai_cli.measure import devices
from sgdsai_cli.measure.bench_result import (
    DEFAULT_OPTIMIZERS,
    REFERENCE,
    BenchResult,
    BenchRow,
    BenchSpec,
    CopyProbe,
    TensorSet,
)
from sgdsai_cli.measure.limits import check_step_count
from sgdsai_cli.measure.stats import BENCH_HINT, QUIET_HINT, latency_summary, median, spread_warning
from sgdsai_cli.optim import IMPLS, SGDSaI, cpu_kernel
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import Environment

__all__ = ["DEFAULT_OPTIMIZERS", "REFERENCE", "BenchResult", "BenchRow", "BenchSpec", "CopyProbe", "TensorSet",
           "bench_step", "check_optimizer", "param_shapes"]
SGDSAI_VARIANTS = tuple(f"sgdsai:{impl}" for impl in IMPLS if impl != "auto")
COPY_MAX_BYTES = 1 << 30  # the bandwidth probe copies at most 1 GiB
MEMORY_HEADROOM = 0.85  # use at most this share of the free memory


# ---------------------------------------------------------------------------------------------
# inputs


def base_name(optimizer: str) -> str:
    """'sgdsai:fused' -> 'sgdsai'."""
    return optimizer.split(":", 1)[0] if optimizer.startswith("sgdsai:") else optimizer


def check_optimizer(name: str) -> str:
    """Validate one optimizer name: a registry name or ``sgdsai:IMPL``; BadInput otherwise."""
    from sgdsai_cli.optim.registry import OPTIMIZER_NAMES, resolve_optimizer

    if name.startswith("sgdsai:"):
        if name not in SGDSAI_VARIANTS:
            raise BadInput(f"unknown optimizer '{name}'" + did_you_mean(name, SGDSAI_VARIANTS), value=name)
        return name
    try:
        resolve_optimizer(name)
    except BadInput:
        raise BadInput(f"unknown optimizer '{name}'" + did_you_mean(name, tuple(OPTIMIZER_NAMES) + SGDSAI_VARIANTS),
                       value=name) from None
    return name


def _blocks(model_spec):
    from sgdsai_cli.models import build_model, decoder_layers

    return decoder_layers(build_model(model_spec, device="meta"))


def param_shapes(model_spec, layers: int | None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter (tied ones once), or of the first ``layers`` decoder layers only."""
    from sgdsai_cli.models import build_model

    if layers is None:
        return [(n, tuple(p.shape)) for n, p in build_model(model_spec, device="meta").named_parameters()]
    blocks = _blocks(model_spec)
    if layers < 1 or layers > len(blocks):
        raise BadInput(f"bad layers {layers} (model '{model_spec.name}' has {len(blocks)} layers: 1..{len(blocks)})",
                       field="layers", value=layers)
    return [(f"layers.{i}.{n}", tuple(p.shape)) for i in range(layers) for n, p in blocks[i].named_parameters()]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def bytes_needed(n_params: int, element_bytes: int, optimizers: tuple[str, ...]) -> int:
    """Params + grads + every optimizer's state (the registry's buffers) + the copy probe's two buffers."""
    from sgdsai_cli.optim.registry import state_buffers

    copies = 2 + sum(state_buffers(base_name(o)) for o in optimizers)
    total = n_params * element_bytes
    return total * copies + 2 * min(total, COPY_MAX_BYTES)


def check_fits(spec: BenchSpec, model_spec, dev: torch.device, element_bytes: int) -> None:
    """EnvironmentUnavailable (exit 3) when the tensors would not fit, with the layers that would."""
    n = sum(_numel(s) for _, s in param_shapes(model_spec, spec.layers))
    need = bytes_needed(n, element_bytes, spec.optimizers)
    free = devices.free_bytes(dev)
    if free is None or need <= free * MEMORY_HEADROOM:
        return
    blocks = len(_blocks(model_spec))
    per_layer = sum(_numel(s) for _, s in param_shapes(model_spec, 1))
    fit = min(int(free * MEMORY_HEADROOM // max(1, bytes_needed(per_layer, element_bytes, spec.optimizers))), blocks)
    which = f"all {blocks} blocks" if spec.layers is None else f"{spec.layers} of {blocks} blocks"
    raise EnvironmentUnavailable(
        f"model '{spec.model}' ({which}, {spec.precision}) needs {need / 2**30:.1f} GiB for parameters, gradients "
        f"and the state of {len(spec.optimizers)} optimizers; {dev} has {free / 2**30:.1f} GiB free"
        + (f"; try layers {fit}" if fit >= 1 else ""), field="layers" if fit >= 1 else None,
        value=fit if fit >= 1 else None)


def _checked(spec: BenchSpec):
    """(spec as run, model spec, device, precision) after every check, before any allocation."""
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.precision import resolve_precision

    check_step_count("warmup", spec.warmup, 0)
    check_step_count("steps", spec.steps, 1)
    optimizers = tuple(dict.fromkeys(check_optimizer(o) for o in spec.optimizers))
    precision = resolve_precision(spec.precision)
    if precision.autocast_dtype is not None:
        raise BadInput(f"precision {spec.precision}: a step has no autocast; use fp32 (the same tensors), bf16 or fp16",
                       field="precision", value=spec.precision)
    model_spec = resolve_model(spec.model)
    dev = devices.resolve_device(spec.device, auto="cpu", meta_refusal="time a step (it has no memory)")
    threads = _check_threads(spec.threads, dev)
    run_spec = BenchSpec(spec.model, str(dev), spec.precision, optimizers, spec.layers, spec.warmup, spec.steps,
                         spec.seed, threads)
    param_shapes(model_spec, spec.layers)  # a bad layers count is bad input before the memory check
    check_fits(run_spec, model_spec, dev, precision.bytes_per_param)
    return run_spec, model_spec, dev, precision


def _check_threads(threads: int | None, dev: torch.device) -> int | None:
    """The torch threads the CPU measurement uses (``threads``, else the current setting); None on CUDA."""
    if threads is None:
        return torch.get_num_threads() if dev.type == "cpu" else None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BadInput(f"threads {threads!r} must be a whole number of at least 1", field="threads", value=threads)
    if dev.type != "cpu":
        raise BadInput(f"threads {threads}: torch threads set the CPU's step; a {dev.type} step runs on the device "
                       "(leave it out)", field="threads", value=threads)
    return threads


# ---------------------------------------------------------------------------------------------
# tensors and optimizers


def make_tensors(shapes, dev: torch.device, dtype: torch.dtype, seed: int) -> list[torch.nn.Parameter]:
    """Parameters (std 0.02) with gradients (std 1e-3, mean 1e-4), filled on the device."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    params = []
    for _, shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, device=dev, dtype=dtype))
        with torch.no_grad():
            p.normal_(0.0, 0.02, generator=gen)
        p.grad = torch.empty(shape, device=dev, dtype=dtype).normal_(1e-4, 1e-3, generator=gen)
        params.append(p)
    return params


def build(name: str, params) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer ``name`` (``sgdsai:IMPL`` forces an implementation) and the impl predicted."""
    if name.startswith("sgdsai:"):
        opt = SGDSaI(params, impl=name.split(":", 1)[1])
        return opt, opt.resolve_impl(params)
    from sgdsai_cli.optim.registry import build_optimizer

    return build_optimizer(name, params)


def _failed_row(name: str, e: BaseException) -> BenchRow:
    text = (str(e).splitlines() or [""])[0]
    if devices.is_oom(e):
        return BenchRow(name, None, status="oom", error=text)
    return BenchRow(name, None, status="error", error=f"{type(e).__name__}: {text}".rstrip(": "))


def _sync(dev: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1e3


def _first_steps(optimizers, params, sync, say) -> tuple[dict, dict[str, float], list[BenchRow]]:
    """Build every optimizer and time its first step (state allocation, g-SNR, kernel builds).

    Returns (name -> (optimizer, predicted impl), name -> first step ms, rows of those that failed):
    an optimizer that cannot be built or stepped here is a row, not a crash.
    """
    opts: dict[str, tuple[torch.optim.Optimizer, str]] = {}
    first: dict[str, float] = {}
    failed: list[BenchRow] = []
    for name in optimizers:
        say(Progress(name, 0, 1, "first step"))
        try:
            opt, predicted = build(name, params)
            first[name] = _timed(opt.step, sync)
        except Exception as e:  # e.g. LBFGS needs a closure
            failed.append(_failed_row(name, e))
            say(Progress(name, 1, 1, failed[-1].status))
            continue
        opts[name] = (opt, predicted)
        say(Progress(name, 1, 1, "ok"))
    return opts, first, failed


def _rounds(tasks: dict[str, Callable[[], Any]], spec: BenchSpec, sync, say) -> dict[str, list[float]]:
    """Warm-up rounds, then ``spec.steps`` measured rounds in a rotated order; name -> ms per round."""
    names = list(tasks)
    for w in range(spec.warmup):
        say(Progress(spec.model, w + 1, spec.warmup, "warmup"))
        for name in names:
            _timed(tasks[name], sync)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(spec.steps):
        say(Progress(spec.model, i + 1, spec.steps, "measured"))
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotate the order: no optimizer always runs first
            times[name].append(_timed(tasks[name], sync))
    return times


# ---------------------------------------------------------------------------------------------
# the benchmark


def _row(name: str, opt, predicted: str, times: dict[str, list[float]], first_ms: float, n_params: int,
         element_bytes: int, copy_gbps: float, dev: torch.device) -> BenchRow:
    from sgdsai_cli.optim.registry import tensors_moved

    step = latency_summary(times[name])
    row = BenchRow(name, getattr(opt, "impl_used", None) or predicted, step_ms=step, first_step_ms=first_ms,
                   copy_bandwidth_gb_per_s=copy_gbps)
    moved = tensors_moved(base_name(name))
    if moved is not None:
        row.bytes_per_step = moved * n_params * element_bytes
        row.bytes_source = "formula"
        row.gb_per_s = row.bytes_per_step / (step["p50"] * 1e-3) / 1e9
        row.bandwidth_fraction = row.gb_per_s / copy_gbps
    ref = times.get(REFERENCE)
    ratios: list[float] = []
    if ref is not None:
        ratios = [a / b for a, b in zip(times[name], ref, strict=True) if b > 0]
    if ratios:
        row.ratio_to_adamw_fused = median(ratios)
        row.ratio_range = [min(ratios), max(ratios)]
    if dev.type == "cpu":
        threads = torch.get_num_threads()
        row.details["threads"] = threads
        load = devices.cpu_load()
        warning = spread_warning(times[name], ratios if name != REFERENCE else (), threads,
                                 load=((load["load_avg"] or [None])[0], load["cpus"]),
                                 hint=BENCH_HINT if threads != 1 else QUIET_HINT)
        if warning:
            row.details["spread_warning"] = warning
    if isinstance(opt, SGDSaI) and row.impl == "compiled":
        row.details["compiled_backend"] = "c" if dev.type == "cpu" else "triton"
        kernel = cpu_kernel() if dev.type == "cpu" else None
        if kernel is not None:  # the first step's share spent building/loading the kernel
            row.details.update(kernel_built=kernel.built, kernel_load_ms=kernel.load_ms, kernel_flags=kernel.flags,
                               openmp=kernel.openmp)
    return row


def bench_step(spec: BenchSpec, *, on_progress: ProgressCallback | None = None) -> BenchResult:
    """Time every optimizer's step interleaved (see the module docstring); the typed result.

    Raises BadInput for a bad request and EnvironmentUnavailable when the device is absent or the
    tensors do not fit, before any allocation. Progress: "allocating", then one task per optimizer
    for its first step, then task ``spec.model`` through the warm-up and measured rounds.
    """
    spec, model_spec, dev, precision = _checked(spec)
    before = torch.get_num_threads()
    if spec.threads is not None and spec.threads != before:
        torch.set_num_threads(spec.threads)  # for this measurement only: restored below
    try:
        return _measure(spec, model_spec, dev, precision, report_to(on_progress))
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _measure(spec: BenchSpec, model_spec, dev: torch.device, precision, say: ProgressCallback) -> BenchResult:
    shapes = param_shapes(model_spec, spec.layers)
    element_bytes = precision.bytes_per_param
    say(Progress(spec.model, None, None, "allocating"))
    try:
        params = make_tensors(shapes, dev, precision.param_dtype, spec.seed)
    except Exception as e:
        if not devices.is_oom(e):
            raise
        why = (str(e).splitlines() or [""])[0]
        raise EnvironmentUnavailable(f"model '{spec.model}': the tensors do not fit on {dev} ({why}); try fewer layers",
                                     field="layers") from None
    n_params = sum(p.numel() for p in params)
    sync = _sync(dev)
    opts, first, rows = _first_steps(spec.optimizers, params, sync, say)
    total_bytes = n_params * element_bytes
    copy_elems = max(1, min(total_bytes, COPY_MAX_BYTES) // element_bytes)
    src = torch.empty(copy_elems, device=dev, dtype=precision.param_dtype).fill_(1.0)
    dst = torch.empty_like(src)
    tasks: dict[str, Callable[[], Any]] = {name: opt.step for name, (opt, _) in opts.items()}
    tasks["__copy__"] = lambda: dst.copy_(src)
    times = _rounds(tasks, spec, sync, say)
    copy = CopyProbe(copy_elems * element_bytes, latency_summary(times["__copy__"]), 0.0)
    copy.gb_per_s = 2 * copy.bytes / (median(times["__copy__"]) * 1e-3) / 1e9
    rows += [_row(name, opt, predicted, times, first[name], n_params, element_bytes, copy.gb_per_s, dev)
             for name, (opt, predicted) in opts.items()]
    order = {name: i for i, name in enumerate(spec.optimizers)}
    rows.sort(key=lambda r: order.get(r.optimizer, len(order)))
    tensors = TensorSet(len(shapes), n_params, total_bytes, max(p.numel() for p in params) * element_bytes)
    return BenchResult(spec, tensors, copy, rows, Environment.current(devices.device_record(dev)))
