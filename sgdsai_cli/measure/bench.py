"""Optimizer-step benchmark (``sgdsai bench-step``): ms per step, bytes moved, copy bandwidth.

Only parameter and gradient tensors shaped like a preset are built (no model, no activations),
so a llama2-7b's step can be timed where its training could not run. Every optimizer (and
every SGD-SaI implementation asked for) updates the same parameters with the same gradients;
each keeps its own state. Steps are interleaved: each measured round runs every optimizer once
(in a rotated order) plus one large ``copy_`` that measures the device's copy bandwidth in the
same conditions, so a ratio compares timings taken side by side on a noisy machine.

    bytes_per_step   the traffic the update needs at minimum (source "formula"): SGD-SaI and
                     SGD with momentum read theta, g, m and write theta, m (5 tensors, 20 bytes
                     per fp32 parameter); AdamW reads theta, g, m, v and writes theta, m, v (7, 28).
    gb_per_s         bytes_per_step / median step time.
    copy bandwidth   2 * bytes / median time of ``dst.copy_(src)`` (a read and a write).
    ratio            median over rounds of (this step time / adamw-fused step time, same round).

On a CPU a plain copy also reads the destination's cache lines before writing them, so a kernel
that reads what it writes can exceed the copy's figure (bandwidth_fraction > 1).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, did_you_mean
from sgdsai_cli.measure.devices import device_record, meminfo_bytes, resolve_device
from sgdsai_cli.optim import IMPLS, SGDSaI, cpu_kernel

DEFAULT_OPTIMIZERS = ("sgdsai", "adamw-fused", "adamw-foreach")
REFERENCE = "adamw-fused"
SGDSAI_VARIANTS = tuple(f"sgdsai:{impl}" for impl in IMPLS if impl != "auto")
# tensors read + written per parameter by the minimal update (see the module docstring)
TENSORS_MOVED = {"sgdsai": 5, "sgdsai-ref": 5, "sgd": 5, "adamw": 7, "adamw-fused": 7, "adamw-foreach": 7,
                 "adamw-loop": 7}
# full-size state tensors per parameter, for the memory check
STATE_COPIES = {"sgdsai": 1, "sgdsai-ref": 1, "sgd": 1}
COPY_MAX_BYTES = 1 << 30  # the bandwidth probe copies at most 1 GiB
MEMORY_HEADROOM = 0.85  # use at most this share of the free memory


@dataclass
class BenchSpec:
    model: str
    device: str = "auto"
    precision: str = "fp32"
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    layers: int | None = None
    warmup: int = 3
    steps: int = 11
    seed: int = 0


@dataclass
class BenchRow:
    """One optimizer's timings. Times in ms; bytes from the formula; ratios are medians of pairs."""

    optimizer: str
    impl: str | None
    status: str = "ok"
    step_ms: dict[str, Any] | None = None
    first_step_ms: float | None = None
    bytes_per_step: int | None = None
    bytes_source: str | None = None
    gb_per_s: float | None = None
    copy_bandwidth_gb_per_s: float | None = None
    bandwidth_fraction: float | None = None
    ratio_to_adamw_fused: float | None = None
    ratio_range: list[float] | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# inputs


def base_name(optimizer: str) -> str:
    """'sgdsai:fused' -> 'sgdsai'."""
    return optimizer.split(":", 1)[0] if optimizer.startswith("sgdsai:") else optimizer


def check_optimizer(name: str) -> str:
    """Validate one --optimizer value: a registry name or ``sgdsai:IMPL``; BadInput otherwise."""
    from sgdsai_cli.optim.registry import OPTIMIZER_NAMES, resolve_optimizer

    if name.startswith("sgdsai:"):
        if name not in SGDSAI_VARIANTS:
            raise BadInput(f"unknown optimizer '{name}'" + did_you_mean(name, SGDSAI_VARIANTS))
        return name
    try:
        resolve_optimizer(name)
    except BadInput:
        raise BadInput(f"unknown optimizer '{name}'"
                       + did_you_mean(name, tuple(OPTIMIZER_NAMES) + SGDSAI_VARIANTS)) from None
    return name




def free_bytes(dev: torch.device) -> int | None:
    """Free device memory: cudaMemGetInfo, or the host's MemAvailable (sysconf where /proc is absent)."""
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    avail = meminfo_bytes("MemAvailable")
    if avail is None:
        import os

        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return avail



def param_shapes(model_spec, layers: int | None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter (tied ones once), or of the first ``layers`` decoder layers only."""
    from sgdsai_cli.models import build_model, decoder_layers

    model = build_model(model_spec, device="meta")
    if layers is None:
        return [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    blocks = decoder_layers(model)
    if layers < 1 or layers > len(blocks):
        raise BadInput(f"bad --layers {layers} (model '{model_spec.name}' has {len(blocks)} layers: 1..{len(blocks)})")
    return [(f"layers.{i}.{n}", tuple(p.shape)) for i in range(layers) for n, p in blocks[i].named_parameters()]


def state_copies(optimizer: str) -> int:
    return STATE_COPIES.get(base_name(optimizer), 2)


def bytes_needed(n_params: int, element_bytes: int, optimizers: tuple[str, ...]) -> int:
    """Params + grads + every optimizer's state + the copy probe's two buffers."""
    copies = 2 + sum(state_copies(o) for o in optimizers)
    total = n_params * element_bytes
    return total * copies + 2 * min(total, COPY_MAX_BYTES)


def check_fits(spec: BenchSpec, model_spec, dev: torch.device, element_bytes: int) -> None:
    """EnvironmentUnavailable (exit 3) when the tensors would not fit, with the --layers that would."""
    n = sum(_numel(s) for _, s in param_shapes(model_spec, spec.layers))
    need = bytes_needed(n, element_bytes, spec.optimizers)
    free = free_bytes(dev)
    if free is None or need <= free * MEMORY_HEADROOM:
        return
    hint = ""
    try:
        per_layer = sum(_numel(s) for _, s in param_shapes(model_spec, 1))
        fit = int(free * MEMORY_HEADROOM // max(1, bytes_needed(per_layer, element_bytes, spec.optimizers)))
        if fit >= 1:
            hint = f"; try --layers {min(fit, len(_blocks(model_spec)))}"
    except BadInput:
        pass
    raise EnvironmentUnavailable(
        f"model '{spec.model}' ({'all layers' if spec.layers is None else f'{spec.layers} layers'}, {spec.precision}) "
        f"needs {need / 2**30:.1f} GiB for parameters, gradients and the state of {len(spec.optimizers)} optimizers; "
        f"{dev} has {free / 2**30:.1f} GiB free{hint}")


def _blocks(model_spec):
    from sgdsai_cli.models import build_model, decoder_layers

    return decoder_layers(build_model(model_spec, device="meta"))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------------------------------------
# timing


def _sync(dev: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1e3


def summary(times: list[float]) -> dict[str, Any]:
    """p50/p90/min/max/n of a list of ms (DESIGN.md latency shape)."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p90": p90, "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def make_tensors(shapes, dev: torch.device, dtype: torch.dtype, seed: int) -> list[torch.nn.Parameter]:
    """Parameters (std 0.02) with gradients (std 1e-3, mean 1e-4), filled on the device."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    params = []
    for _, shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, device=dev, dtype=dtype))
        with torch.no_grad():
            p.normal_(0.0, 0.02, generator=gen)
        g = torch.empty(shape, device=dev, dtype=dtype).normal_(1e-4, 1e-3, generator=gen)
        p.grad = g
        params.append(p)
    return params


def build(name: str, params) -> tuple[torch.optim.Optimizer, str]:
    if name.startswith("sgdsai:"):
        opt = SGDSaI(params, impl=name.split(":", 1)[1])
        return opt, opt.resolve_impl(params)
    from sgdsai_cli.optim.registry import build_optimizer

    return build_optimizer(name, params)


def _quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    """The official sgd_sai prints from step(): keep it off our output."""
    import contextlib
    import io

    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()

    return run


def _impl_used(opt, predicted: str) -> str:
    return getattr(opt, "impl_used", None) or predicted


def run_bench(spec: BenchSpec, *, on_event: Callable[[str], None] | None = None) -> tuple[dict, list[BenchRow], dict]:
    """Time every optimizer's step interleaved; return (spec dict, rows, extra body fields)."""
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.precision import resolve_precision

    say = on_event or (lambda _msg: None)
    if spec.warmup < 0:
        raise BadInput(f"bad --warmup {spec.warmup} (must be 0 or more)")
    if spec.steps < 1:
        raise BadInput(f"bad --steps {spec.steps} (must be 1 or more)")
    optimizers = tuple(dict.fromkeys(check_optimizer(o) for o in spec.optimizers))
    spec.optimizers = optimizers
    precision = resolve_precision(spec.precision)
    if precision.autocast_dtype is not None:
        raise BadInput(f"--precision {spec.precision}: a step has no autocast; "
                       "use fp32 (the same tensors), bf16 or fp16")
    model_spec = resolve_model(spec.model)
    dev = resolve_device(spec.device, meta_refusal="time a step (it has no memory)")
    dtype = precision.param_dtype
    shapes = param_shapes(model_spec, spec.layers)
    element_bytes = precision.bytes_per_param
    check_fits(spec, model_spec, dev, element_bytes)

    say(f"allocating {len(shapes)} tensors on {dev}")
    try:
        params = make_tensors(shapes, dev, dtype, spec.seed)
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise EnvironmentUnavailable(f"model '{spec.model}': the tensors do not fit on {dev} ({e}"
                                     .splitlines()[0] + "); try --layers") from None
    n_params = sum(p.numel() for p in params)
    sync = _sync(dev)

    rows: list[BenchRow] = []
    opts: dict[str, tuple[torch.optim.Optimizer, str]] = {}
    for name in optimizers:
        try:
            opts[name] = build(name, params)
        except Exception as e:  # an optimizer that cannot be built here is a row, not a crash
            rows.append(BenchRow(name, None, status="error", error=f"{type(e).__name__}: {e}"))
    # first step: state allocation, g-SNR, kernel builds (compilation) - reported apart
    first: dict[str, float] = {}
    for name, (opt, _) in list(opts.items()):
        say(f"first step: {name}")
        try:
            first[name] = _timed(_quiet(opt.step) if name == "sgdsai-ref" else opt.step, sync)
        except torch.OutOfMemoryError as e:
            rows.append(BenchRow(name, None, status="oom", error=str(e).splitlines()[0]))
            del opts[name]
        except Exception as e:  # e.g. LBFGS needs a closure: a row, not a crash
            rows.append(BenchRow(name, None, status="error", error=f"{type(e).__name__}: {e}".splitlines()[0]))
            del opts[name]

    total_bytes = n_params * element_bytes
    copy_elems = max(1, min(total_bytes, COPY_MAX_BYTES) // element_bytes)
    src = torch.empty(copy_elems, device=dev, dtype=dtype).fill_(1.0)
    dst = torch.empty_like(src)
    tasks: dict[str, Callable[[], Any]] = {name: _quiet(opt.step) if name == "sgdsai-ref" else opt.step
                                           for name, (opt, _) in opts.items()}
    tasks["__copy__"] = lambda: dst.copy_(src)

    names = list(tasks)
    for w in range(spec.warmup):
        say(f"warm-up {w + 1}/{spec.warmup}")
        for name in names:
            _timed(tasks[name], sync)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(spec.steps):
        say(f"round {i + 1}/{spec.steps}")
        k = i % len(names)
        for name in names[k:] + names[:k]:  # rotate the order: no optimizer always runs first
            times[name].append(_timed(tasks[name], sync))

    copy_ms = statistics.median(times["__copy__"])
    copy_gbps = 2 * copy_elems * element_bytes / (copy_ms * 1e-3) / 1e9
    ref = times.get(REFERENCE)
    for name, (opt, predicted) in opts.items():
        step = summary(times[name])
        moved = TENSORS_MOVED.get(base_name(name))
        row = BenchRow(name, _impl_used(opt, predicted), step_ms=step, first_step_ms=first[name],
                       copy_bandwidth_gb_per_s=copy_gbps)
        if moved is not None:
            row.bytes_per_step = moved * n_params * element_bytes
            row.bytes_source = "formula"
            row.gb_per_s = row.bytes_per_step / (step["p50"] * 1e-3) / 1e9
            row.bandwidth_fraction = row.gb_per_s / copy_gbps
        if ref is not None:
            ratios = [a / b for a, b in zip(times[name], ref, strict=True)]
            row.ratio_to_adamw_fused = statistics.median(ratios)
            row.ratio_range = [min(ratios), max(ratios)]
        if isinstance(opt, SGDSaI) and row.impl == "compiled":
            row.details["compiled_backend"] = "c" if dev.type == "cpu" else "triton"
            kernel = cpu_kernel() if dev.type == "cpu" else None
            if kernel is not None:  # the first step's share spent building/loading the kernel
                row.details.update(kernel_built=kernel.built, kernel_load_ms=kernel.load_ms,
                                   kernel_flags=kernel.flags, openmp=kernel.openmp)
        rows.append(row)
    order = {name: i for i, name in enumerate(optimizers)}
    rows.sort(key=lambda r: order.get(r.optimizer, len(order)))

    spec_dict = {"model": spec.model, "precision": spec.precision, "device": str(dev), "layers": spec.layers,
                 "optimizers": list(optimizers), "warmup": spec.warmup, "steps": spec.steps, "seed": spec.seed}
    body = {
        "tensors": {"count": len(shapes), "params": n_params, "param_bytes": total_bytes,
                    "largest_tensor_bytes": max(p.numel() for p in params) * element_bytes},
        "copy": {"bytes": copy_elems * element_bytes, "ms": summary(times["__copy__"]),
                 "gb_per_s": copy_gbps},
        "device_record": device_record(dev),
    }
    return spec_dict, rows, body


def bench_document(spec: BenchSpec, *, on_event=None) -> dict:
    """Run the benchmark and wrap it in the DESIGN.md envelope (kind "bench-step")."""
    from sgdsai_cli.results import envelope, to_plain

    spec_dict, rows, body = run_bench(spec, on_event=on_event)
    device = body.pop("device_record")
    return envelope("bench-step", spec_dict, {**body, "rows": to_plain(rows)}, device)


def rows_table(doc: dict) -> list[dict[str, Any]]:
    """Flat rows for a table renderer: numbers, not strings."""
    out = []
    for r in doc.get("rows", []):
        step = r.get("step_ms") or {}
        out.append({
            "optimizer": r.get("optimizer"), "impl": r.get("impl"), "status": r.get("status"),
            "step_ms_p50": step.get("p50"), "step_ms_min": step.get("min"), "step_ms_max": step.get("max"),
            "first_step_ms": r.get("first_step_ms"), "gb_per_s": r.get("gb_per_s"),
            "bandwidth_fraction": r.get("bandwidth_fraction"), "ratio_to_adamw_fused": r.get("ratio_to_adamw_fused"),
            "ratio_range": r.get("ratio_range"), "error": r.get("error"),
        })
    return out
