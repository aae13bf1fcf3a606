"""Capacity planner: which GPU, how many of them, and how large a batch, per optimizer and precision.

    result = plan("llama2-7b", precisions=["fp32", "bf16"], gpus=["h100-80gb"], optimizers=["sgdsai", "adamw"])
    result.rows[0]   # PlanRow(optimizer="sgdsai", precision="fp32", gpu="h100-80gb", fits=True, ...)
    result.to_dict() # the kind "plan" document

Per optimizer O, precision P and GPU g (all sizes in bytes; P, G, S = params, grads, optimizer state):

    model_state  = P + G + S                                 exact (fake-tensor step of the full model)
    activations  = A(batch, seq)                             fake-tensor trace of forward + backward: the
                                                             activation peak (estimate.activation_bytes)
    fb_peak      = FB(batch, seq)                            the same trace's peak of activations plus the
                                                             gradients accumulated so far (<= A + G)
    transient    = T                                         what optimizer.step() allocates on top of its
                                                             state (foreach AdamW: a full-size sqrt copy)
    allocated    = P + S + max(FB, X + G + T)               forward/backward peak, or the step's peak after
                                                             backward freed the activations, X the batch the
                                                             loop still holds (as the profile's estimated peak)
    reserved     = R(batch, seq)                             the CUDA caching allocator's reserved bytes at
                                                             the peak: the same trace's allocations and frees
                                                             replayed through the allocator model
                                                             (measure.allocator; allocated where no model ran)
    context      = C(g): the card's context allowance        CUDA context, cuBLAS/cuDNN workspaces, kernels:
                   (gpus.GPU.context_bytes), or --context    measured on the H100, an assumption elsewhere
    total        = reserved + context
    usable(g)    = memory(g) - context
    fits         = total <= memory(g)                        (gpus.fits: the rule profile's "fits" rows use)
    max_batch    = largest B with R(B) + C(g) <= memory(g)   (0 when B = 1 does not fit)

The largest batch is searched on the allocated bytes first (``max_batch_size``: secant steps, then
regula falsi), then confirmed, and lowered where needed, on the reserved bytes, which need the
events of that very batch. FB is not affine in B (below some batch the gradients accumulated during
backward set it, above it the activations do), but every single allocation of the trace is: each
batch's trace comes from ``measure.batch_line``, the same events with their sizes on a line checked
against real traces (B = 1 is traced; B = 2 and 3 make the line; a trace at the top of the search
range checks it there), so four traces stand for the dozens of batches a search asks for.

Every optimizer is planned on the path it takes on a GPU (``estimate.use_cuda_default_path``): ``adamw``
runs foreach there (its ``sqrt(exp_avg_sq)`` is a full-size temporary); name ``adamw-fused`` or
``adamw-loop`` to plan those.

GPUs needed, each GPU running one micro-batch of ``batch_size``; the smallest N whose per-GPU bytes
fit usable(g), ``None`` when no N can (the step transient shards with the state under ZeRO, and is
added on top of A there, which errs on the safe side):

    DDP        total <= memory(g), i.e. fits             -> 1, or None (replicas never shrink)
    ZeRO-1     P + G + (S + T)/N + A       <= usable   -> N = ceil((S + T) / (usable - A - P - G))
    ZeRO-2     P + (G + S + T)/N + A       <= usable   -> N = ceil((G + S + T) / (usable - A - P))
    ZeRO-3     (P + G + S + T)/N + A       <= usable   -> N = ceil((P + G + S + T) / (usable - A))   (= FSDP)

When one GPU fits (``fits``), every strategy needs 1. ZeRO-3's gathered layer (one block's parameters
at a time) and communication buffers are not added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sgdsai_cli.analysis.gpus import DEFAULT_GPUS
from sgdsai_cli.analysis.gpus import fits as gpu_fits
from sgdsai_cli.analysis.plan_limits import STRATEGIES, gpus_needed, impractical_counts  # noqa: F401 (plan.*)
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import Document, Environment

GiB = 1024**3
DEFAULT_PRECISIONS = ("fp32", "bf16")
DEFAULT_OPTIMIZERS = ("sgdsai", "adamw")
MAX_BATCH_LIMIT = 1 << 16  # the search stops here: "at least 65536"


@dataclass
class PlanRow:
    """One (optimizer, precision, GPU) cell of the plan. Bytes are ints; None means "no count works"."""

    optimizer: str
    impl: str | None  # the implementation planned (adamw: foreach, as torch runs it on CUDA)
    precision: str
    gpu: str
    gpu_label: str
    gpu_memory_bytes: int
    usable_bytes: int
    context_bytes: int
    context_source: str
    param_bytes: int
    grad_bytes: int
    state_bytes: int
    model_state_bytes: int
    activation_bytes: int
    forward_backward_peak_bytes: int
    step_transient_bytes: int
    allocated_peak_bytes: int
    reserved_peak_bytes: int | None  # None: no allocator model ran (total uses the allocated peak)
    total_bytes: int
    fits: bool
    max_batch_size: int
    gpus_needed: dict[str, int | None]
    # formula counts past any real deployment, per strategy: reason, room for the shards (plan_limits)
    gpus_needed_impractical: dict[str, dict] = field(default_factory=dict)


def max_batch_size(activation: Callable[[int], int], room_bytes: int, limit: int = MAX_BATCH_LIMIT) -> int:
    """Largest B in [0, limit] with ``activation(B) <= room_bytes``, for ``activation`` increasing in B.

    Activations of these models are close to affine in the batch at a fixed sequence length
    (``a(B) = a0 + B * per_sample``), so the search extrapolates along the secant from the last batch that
    fits until one does not, then interpolates inside that bracket (regula falsi), with a bisection step
    whenever an interpolation fails to halve the bracket. For an affine ``activation`` that is 4 calls
    (1, 2, the answer, the answer + 1); for anything increasing it is still exact, in O(log limit) calls.
    ``activation`` should be cached by the caller.
    """
    a1 = activation(1)
    if room_bytes <= 0 or a1 > room_bytes:
        return 0
    if limit <= 1:
        return 1
    a2 = activation(2)
    if a2 > room_bytes:
        return 1
    good, a_good, slope = 2, a2, max(a2 - a1, 1)
    bad = a_bad = None
    while bad is None:  # extrapolate until past the room or at the limit
        guess = min(limit, good + max(1, (room_bytes - a_good) // slope))
        if guess == good:
            return good
        value = activation(guess)
        if value <= room_bytes:
            slope = max((value - a_good) // (guess - good), 1)
            good, a_good = guess, value
            if good == limit:
                return good
        else:
            bad, a_bad = guess, value
    while bad - good > 1:  # regula falsi inside [good, bad), bisection when it stalls
        width = bad - good
        probe = good + (room_bytes - a_good) * (bad - good) // max(a_bad - a_good, 1)
        probe = min(max(probe, good + 1), bad - 1)
        for candidate in (probe, (good + bad) // 2):
            if not good < candidate < bad:
                continue
            value = activation(candidate)
            if value <= room_bytes:
                good, a_good = candidate, value
            else:
                bad, a_bad = candidate, value
            if bad - good <= width // 2:
                break
    return good


def _default_activation_fn(model_spec, precision: str, seq_len: int) -> Callable[[int], tuple[int, int]]:
    """``batch -> (activation peak, forward/backward peak with gradients)`` from the fake-tensor trace of that
    batch (``batch_line``: from the checked line through a few traces, else traced; cached)."""
    from sgdsai_cli.measure.batch_line import forward_backward_at
    from sgdsai_cli.precision import resolve_precision

    prec = resolve_precision(precision)

    def activation(batch_size: int) -> tuple[int, int, int]:
        trace = forward_backward_at(model_spec, prec, batch_size, seq_len)
        return int(trace.activation_peak_bytes), int(trace.forward_backward_peak_bytes), int(trace.batch_bytes)

    return activation


def _default_reserved_fn(model_spec, precision: str, optimizer: str, seq_len: int) -> Callable[[int], int]:
    """``batch -> predicted reserved peak bytes`` (the trace of that batch through the allocator model)."""
    from sgdsai_cli.measure import estimate
    from sgdsai_cli.measure.allocator_trace import predict_step_reserved
    from sgdsai_cli.measure.batch_line import forward_backward_at
    from sgdsai_cli.precision import resolve_precision

    prec = resolve_precision(precision)

    def reserved(batch_size: int) -> int:
        fb = forward_backward_at(model_spec, prec, batch_size, seq_len)
        st = estimate.trace_step(model_spec, prec, optimizer)
        return int(predict_step_reserved(model_spec, prec, fb, st).replay.reserved_peak_bytes)

    return reserved


def _pair(value) -> tuple[int, int, int]:
    """An activation function may return one number (used as both figures), the pair (activation peak,
    forward/backward peak) or with the batch's bytes third; (activation, forward/backward, batch)."""
    if isinstance(value, (int, float)):
        return int(value), int(value), 0
    return int(value[0]), int(value[1]), int(value[2]) if len(value) > 2 else 0


def _default_step_fn(model_spec, precision: str, optimizer: str) -> dict:
    """Exact params, grads, state and step transient of ``optimizer`` (a fake-tensor step), as a dict."""
    from sgdsai_cli.measure import estimate
    from sgdsai_cli.precision import resolve_precision

    prec = resolve_precision(precision)
    try:
        trace = estimate.trace_step(model_spec, prec, optimizer)  # on the CUDA default path
    except (BadInput, EnvironmentUnavailable):
        raise
    except Exception as e:  # an optimizer whose step cannot run (LBFGS needs a closure, SparseAdam sparse grads)
        from sgdsai_cli.errors import error_text

        raise BadInput(f"optimizer {optimizer!r} cannot be planned: its step() does not run here ({error_text(e)})",
                       field="optimizer", value=optimizer) from None
    # a QLoRA base's quantisation state counts with the parameters: memory the model holds the whole run
    return {"impl": trace.impl,
            "param_bytes": estimate.param_bytes(model_spec, prec) + estimate.quant_state_bytes(model_spec, prec),
            "grad_bytes": estimate.grad_bytes_of(model_spec, prec),
            "state_bytes": trace.state_bytes, "step_transient_bytes": trace.step_transient_bytes}


def model_info(model_spec) -> dict:
    """Name, family, parameter count and tensor count (a meta build: allocates nothing)."""
    from sgdsai_cli.measure.identity import display_name, model_fingerprint
    from sgdsai_cli.models import build_model, trainable_parameters

    model = build_model(model_spec, device="meta")
    params = list(model.parameters())
    return {"name": display_name(model_spec), "family": model_spec.family,
            "fingerprint": model_fingerprint(model_spec, model), "params": sum(p.numel() for p in params),
            "param_tensors": len(params), "trainable_params": sum(p.numel() for p in trainable_parameters(model))}


def plan_rows(model_spec, precisions, gpus, optimizers, *, batch_size: int = 1, seq_len: int = 512,
              context_bytes: int | None = None,
              activation_fn: Callable[[Any, str, int], Callable[[int], Any]] | None = None,
              step_fn: Callable[[Any, str, str], dict] | None = None,
              reserved_fn: Callable[[Any, str, str, int], Callable[[int], int | None]] | None = None,
              on_progress: ProgressCallback | None = None) -> list[PlanRow]:
    """The plan rows for resolved inputs. ``gpus`` are ``gpus.GPU`` records.

    ``activation_fn(model_spec, precision, seq_len)`` returns a ``batch -> (activation peak, forward/backward
    peak)`` function (one number stands for both),
    ``step_fn(model_spec, precision, optimizer)`` a dict of impl, param/grad/state/step_transient bytes and
    ``reserved_fn(model_spec, precision, optimizer, seq_len)`` a ``batch -> reserved peak bytes`` function
    (None: no allocator model, the allocated peak stands); all default to the fake-tensor estimators and
    the allocator model (with injected activation or step functions, reserved defaults to None) and are
    parameters so tests can plan without tracing. ``context_bytes`` None: each card's own allowance.
    """
    if reserved_fn is None:
        reserved_fn = _default_reserved_fn if activation_fn is None and step_fn is None else _no_reserved
    activation_fn = activation_fn or _default_activation_fn
    step_fn = step_fn or _default_step_fn
    report = report_to(on_progress)
    rows: list[PlanRow] = []
    total = len(precisions) * len(optimizers)
    for i, precision in enumerate(precisions):
        traced = activation_fn(model_spec, precision, seq_len)
        cache: dict[int, tuple[int, int, int]] = {}

        def pair(b: int, traced=traced, cache=cache) -> tuple[int, int, int]:
            if b not in cache:
                cache[b] = _pair(traced(b))
            return cache[b]

        act, fb, _ = pair(batch_size)
        for j, optimizer in enumerate(optimizers):
            report(Progress(model_spec.name, i * len(optimizers) + j, total, f"{precision} {optimizer}"))
            sizes = step_fn(model_spec, precision, optimizer)
            p, g, s = sizes["param_bytes"], sizes["grad_bytes"], sizes["state_bytes"]
            t = sizes.get("step_transient_bytes") or 0
            states = p + g + s
            reserved_of = _cached(reserved_fn(model_spec, precision, optimizer, seq_len))

            def allocated(b: int, pair=pair, p=p, s=s, g=g, t=t) -> int:
                _, fb_b, batch_b = pair(b)
                return p + s + max(fb_b, batch_b + g + t)

            def need(b: int, allocated=allocated, reserved_of=reserved_of) -> int:
                r = reserved_of(b)
                return allocated(b) if r is None else r

            reserved = reserved_of(batch_size)
            for gpu in gpus:
                context = gpu.context_bytes if context_bytes is None else context_bytes
                usable = gpu.memory_bytes - context
                fits = bool(gpu_fits(gpu, need(batch_size), context))
                # the largest batch on the allocated bytes (cheap, along the activation line), then on the
                # reserved bytes below it (reserved >= allocated, each needs that batch's trace)
                best = _largest_reserved_batch(allocated, need, usable)
                needed = gpus_needed(p, g, s, act, usable, t, fits)
                rows.append(PlanRow(
                    optimizer=optimizer, impl=sizes.get("impl"), precision=precision,
                    gpu=gpu.name, gpu_label=gpu.label, gpu_memory_bytes=gpu.memory_bytes, usable_bytes=usable,
                    context_bytes=context,
                    context_source=gpu.context_source if context_bytes is None else "--context",
                    param_bytes=p, grad_bytes=g, state_bytes=s,
                    model_state_bytes=states, activation_bytes=act, forward_backward_peak_bytes=fb,
                    step_transient_bytes=t, allocated_peak_bytes=allocated(batch_size), reserved_peak_bytes=reserved,
                    total_bytes=need(batch_size) + context, fits=fits, max_batch_size=best,
                    gpus_needed=needed, gpus_needed_impractical=impractical_counts(
                        param_bytes=p, grad_bytes=g, activation_bytes=act, usable_bytes=usable, needed=needed),
                ))
    report(Progress(model_spec.name, total, total, "done"))
    return rows


def _largest_reserved_batch(allocated: Callable[[int], int], need: Callable[[int], int], usable: int) -> int:
    """Largest B with ``need(B) <= usable``, where ``need >= allocated`` and ``allocated`` is cheap.

    Start at the answer on the allocated bytes; while the reserved bytes do not fit there, scale the
    allocated bytes by the reserved/allocated ratio seen at that batch and take the answer below it
    (a batch a step smaller at the least). Each call costs a trace of that batch: a few in all.
    """
    best = max_batch_size(allocated, usable)
    too_big = None  # the smallest batch seen not to fit on the reserved bytes
    while best > 0 and need(best) > usable:
        too_big = best
        if best == 1:
            return 0
        scale = need(best) / max(allocated(best), 1)
        guess = max_batch_size(lambda b, scale=scale: math.ceil(allocated(b) * scale), usable, limit=best - 1)
        best = guess if 0 < guess < best else best - 1
    while too_big is not None and too_big - best > 1:  # the ratio overshot: bisect back up (reserved is stepwise)
        middle = (best + too_big) // 2
        best, too_big = (middle, too_big) if need(middle) <= usable else (best, middle)
    return best


def _no_reserved(model_spec, precision: str, optimizer: str, seq_len: int) -> Callable[[int], None]:
    return lambda batch_size: None


def _cached(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    cache: dict[int, Any] = {}

    def cached(b: int):
        if b not in cache:
            cache[b] = fn(b)
        return cache[b]

    return cached


class PlanResult(Document):
    """The plan: ``spec`` (model, precisions, gpus, optimizers, batch), ``body`` (model, assumptions, rows)."""

    kind = "plan"

    @property
    def rows(self) -> list[PlanRow]:
        return [PlanRow(**r) for r in self.body.get("rows", [])]


def plan(model: str, precisions=DEFAULT_PRECISIONS, gpus=DEFAULT_GPUS, optimizers=DEFAULT_OPTIMIZERS, *,
         batch_size: int = 1, seq_len: int = 512, context_bytes: int | None = None,
         activation_fn=None, step_fn=None, reserved_fn=None, parallel: str = "none",
         activation_checkpointing: str = "none", lora=None, fit: bool | str = False,
         on_progress: ProgressCallback | None = None) -> PlanResult:
    """Resolve names (BadInput for unknown ones) and plan every (optimizer, precision, GPU).

    ``parallel="fsdp2"`` adds ``fsdp2_rows``: the fewest FSDP2 ranks from the one-process simulation
    (``plan_fsdp2``), beside the formula counts of every row's ``gpus_needed``. ``fit=True`` adds ``fit_rows``:
    per GPU and optimizer, the ladder of recipes (full fp32 ... LoRA + checkpointing) with their largest batch
    (``plan_fit``; ``lora`` is then the adapter of its LoRA rungs); ``fit="auto"`` adds them for the GPUs on
    which no row fits (what the command does by default)."""
    from sgdsai_cli.analysis.gpus import resolve_gpu
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.optim.registry import resolve_optimizer
    from sgdsai_cli.precision import resolve_precision
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"bad {name} {value!r} (must be a whole number, 1 or more)", field=name, value=value)
    if context_bytes is not None and (isinstance(context_bytes, bool) or not isinstance(context_bytes, int)
                                      or context_bytes < 0):
        raise BadInput(f"bad context {context_bytes!r} (must be a byte count)", field="context", value=context_bytes)
    precisions = list(dict.fromkeys(resolve_precision(p).name for p in (precisions or DEFAULT_PRECISIONS)))
    optimizers = list(dict.fromkeys(optimizers or DEFAULT_OPTIMIZERS))
    for p in precisions:
        resolve_precision(p)
    for o in optimizers:
        resolve_optimizer(o)
    gpu_records = list({g.name: g for g in (resolve_gpu(n) for n in (gpus or DEFAULT_GPUS))}.values())
    for gpu in gpu_records:
        context = gpu.context_bytes if context_bytes is None else context_bytes
        if gpu.memory_bytes <= context:
            raise BadInput(f"GPU '{gpu.name}' has no memory left after the context allowance of {context} "
                           "bytes", field="gpu", value=gpu.name)
    if parallel not in ("none", "fsdp2"):
        raise BadInput(f"bad parallel {parallel!r} (none or fsdp2)", field="parallel", value=parallel)
    from sgdsai_cli.models.checkpointing import parse_policy
    from sgdsai_cli.models.lora import parse_lora

    checkpointing = parse_policy(activation_checkpointing)
    lora_spec = parse_lora(lora)
    model_spec = resolve_model(model)
    base_spec = model_spec
    if checkpointing != "none" or lora_spec is not None:
        import dataclasses

        model_spec = dataclasses.replace(model_spec, checkpointing=checkpointing, lora=lora_spec)
    rows = plan_rows(model_spec, precisions, gpu_records, optimizers, batch_size=batch_size, seq_len=seq_len,
                     context_bytes=context_bytes, activation_fn=activation_fn, step_fn=step_fn,
                     reserved_fn=reserved_fn, on_progress=on_progress)
    spec = {"model": model_spec.name, "precisions": precisions, "gpus": [g.name for g in gpu_records],
            "optimizers": optimizers, "batch_size": batch_size, "seq_len": seq_len, "device": "meta"}
    body = {
        "model": model_info(model_spec),
        "assumptions": {
            "context_bytes": context_bytes,  # null: each row's card allowance (context_bytes, context_source)
            "source": "fake",
            "allocated_peak_bytes": "param_bytes + state_bytes + max(forward_backward_peak_bytes, batch bytes + "
                                    "grad_bytes + step_transient_bytes)",
            "reserved_peak_bytes": "the caching allocator model's reserved peak for the same trace "
                                   "(PYTORCH_CUDA_ALLOC_CONF of this process); null where no model ran",
            "total_bytes": "(reserved_peak_bytes, else allocated_peak_bytes) + context_bytes",
            "usable_bytes": "gpu_memory_bytes - context_bytes",
            "gpus_needed": "formulas, not simulated (docs/planning.md; plan --parallel fsdp2 simulates FSDP2): "
                           "smallest N with per-GPU bytes <= usable_bytes, one micro-batch of batch_size "
                           "per GPU; null when no N fits",
            "gpus_needed_impractical": "formula counts flagged impractical (analysis/plan_limits.py): the "
                                       "replicated part leaves under 10% of usable_bytes for the shards, or "
                                       "more than 1024 GPUs",
            "max_batch_size_limit": MAX_BATCH_LIMIT,
        },
        "rows": [asdict(r) for r in rows],
    }
    if checkpointing != "none":
        spec["activation_checkpointing"] = checkpointing
    if lora_spec is not None:
        spec["lora"] = lora_spec.text()
    from sgdsai_cli.analysis.plan_fit import add_fit_rows

    add_fit_rows(spec, body, base_spec, gpu_records, rows, optimizers, fit, batch_size=batch_size, seq_len=seq_len,
                 context_bytes=context_bytes, lora=lora_spec, on_progress=on_progress)
    if parallel == "fsdp2":
        from sgdsai_cli.analysis.plan_fsdp2 import fsdp2_rows

        spec["parallel"] = "fsdp2"
        body["assumptions"]["fsdp2_rows"] = (
            "gpus_needed: the fewest ranks (1, 2, 4, ...) whose simulated rank-0 step peak (real fully_shard over "
            "torch's fake process group, fake tensors) plus the card's context fits the card; allocated bytes, "
            "the communication library's own buffers not counted")
        body["fsdp2_rows"] = fsdp2_rows(model_spec, precisions, gpu_records, optimizers, batch_size=batch_size,
                                        seq_len=seq_len, context_bytes=context_bytes, on_progress=on_progress)
    return PlanResult(spec=spec, body=body, environment=Environment.current())
