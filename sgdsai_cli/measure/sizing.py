"""Exact sizing on the meta device: parameters, gradients and each optimizer's state, in bytes.

    result = size_profile(spec, model_spec, ["sgdsai", "adamw"])   # a ProfileResult, no printing

The model is built under ``torch.device("meta")`` (shapes and dtypes, no storage), every
parameter gets a meta gradient, and each requested optimizer is constructed and its real
``step()`` called once: optimizer state is created lazily by the first step, so reading
``optimizer.state`` afterwards gives the bytes the optimizer itself allocates, per key, never a
formula. Tensors are counted once per storage (tied parameters, shared state), by the rule of
``storage``.

Optimizers take the path they would take on CUDA (``stepping.use_cuda_default_path``). Fused
AdamW has no meta kernel: its state is sized by stepping the same AdamW through the foreach path,
whose state (``step``, ``exp_avg``, ``exp_avg_sq``) is the same, and the row says so.

With ``estimate=True`` each run also gets the fake-tensor trace of one training step
(``estimate.estimate_step``): activation peak, step transient and estimated peak. That trace steps each
optimizer over fake tensors of the same model (fused AdamW included: it has a fake kernel), so the
state is read from its first step and the meta step is not repeated; an optimizer the trace cannot
step is sized on meta as above, its row saying why it has no estimate.
"""

from __future__ import annotations

import time

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, error_text
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.stepping import SymbolicScalars, symbolic_step, use_cuda_default_path
from sgdsai_cli.measure.storage import state_bytes_by_key, unique_bytes
from sgdsai_cli.optim.registry import build_optimizer, resolve_optimizer, state_note
from sgdsai_cli.precision import Precision, resolve_precision
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import META_DEVICE, Environment, MemoryResult, ModelInfo, ProfileResult, ProfileSpec, RunResult

FUSED_NOTE = "fused AdamW cannot step on meta; state sized through the foreach path (same state)"


def model_info(model: torch.nn.Module, model_spec) -> ModelInfo:
    """Counts and bytes of ``model``'s parameters (tied tensors once); gradients are those of the trainable ones.

    The name is the display name and the fingerprint the model's identity (``measure.identity``). A LoRA
    model's ``extra["lora"]`` holds its adapter options and ``extra["frozen_params"]`` the frozen base.
    """
    from sgdsai_cli.measure.identity import display_name, model_fingerprint
    from sgdsai_cli.models import trainable_parameters

    params = list(model.parameters())  # de-duplicated by identity: a tied head appears once
    trainable = trainable_parameters(model)
    info = ModelInfo(
        name=display_name(model_spec),
        family=model_spec.family,
        fingerprint=model_fingerprint(model_spec, model),
        params=sum(p.numel() for p in params),
        param_tensors=len(params),
        param_bytes=unique_bytes(params),
        grad_bytes=unique_bytes(trainable),
        trainable_params=sum(p.numel() for p in trainable),
    )
    if model_spec.lora is not None:
        info.extra["lora"] = model_spec.lora.to_dict()
        info.extra["frozen_params"] = info.params - info.trainable_params
    quantized = getattr(model, "sgdsai_quantized", None)
    if quantized is not None:  # QLoRA: the 4-bit base (packed weights are parameters; their state is not)
        info.extra["qlora"] = quantized.to_dict()
        # a packed weight holds two 4-bit codes a byte: count the weights it stands for, not its bytes
        info.params = sum(p.numel() for p in params if getattr(p, "quant_state", None) is None) \
            + quantized.quantized_elements
        info.extra["frozen_params"] = info.params - info.trainable_params
    return info


def meta_model(model_spec, precision: Precision) -> torch.nn.Module:
    """``model_spec`` on meta in the precision's parameter dtype, each trainable parameter with a meta gradient."""
    from sgdsai_cli.models import build_model, trainable_parameters

    model = build_model(model_spec, device="meta", dtype=precision.param_dtype)
    for p in trainable_parameters(model):
        p.grad = torch.empty_like(p)
    return model


def size_optimizer(model: torch.nn.Module, optimizer: str,
                   master_dtype: torch.dtype | None = None) -> tuple[dict[str, int], str, str | None]:
    """Step ``optimizer`` once over ``model``'s trainable parameters (meta, with gradients); return (bytes by key,
    impl, note)."""
    from sgdsai_cli.models import trainable_named_parameters

    params = trainable_named_parameters(model)  # named: the Muon hybrid splits by name
    opt, impl = build_optimizer(optimizer, params, master_dtype)
    note = None
    fused = impl == "fused" or impl.endswith("+fused")  # adamw-fused, muon-fused (its AdamW part)
    if fused:
        for group in getattr(opt, "inner", opt).param_groups:  # a MasterWeights wrapper: its inner optimizer
            if group.get("fused"):
                group["fused"], group["foreach"] = False, True
        use_impl = "foreach"
        note = FUSED_NOTE
    else:
        use_impl = use_cuda_default_path(opt)
    scalars = SymbolicScalars()
    symbolic_step(opt, scalars)
    if scalars.reads:
        note = "; ".join(filter(None, [note, f"meta tensors have no values: {scalars.reads} scalar reads "
                                             "(Tensor.item) answered with 1 while sizing"]))
    by_key = state_bytes_by_key(opt)
    note = "; ".join(filter(None, [note, state_note(opt)])) or None
    return by_key, (impl if fused else use_impl), note


def _size_run(model, optimizer: str, estimate: bool, info: ModelInfo, precision: Precision) -> RunResult:
    try:
        by_key, impl, note = size_optimizer(model, optimizer, precision.master_dtype)
    except EnvironmentUnavailable as e:
        return RunResult(optimizer=optimizer, impl=None, status="skipped", error=str(e))
    except Exception as e:  # an optimizer that cannot step (needs a closure, sparse grads, ...)
        return RunResult(optimizer=optimizer, impl=None, status="error", error=error_text(e))
    memory = MemoryResult(
        source="fake" if estimate else "meta",
        state_bytes=sum(by_key.values()),
        state_bytes_by_key=by_key,
        param_bytes=info.param_bytes,
        grad_bytes=info.grad_bytes,
    )
    return RunResult(optimizer=optimizer, impl=impl, status="ok", memory=memory, note=note)


def _traced_run(model_spec, optimizer: str, info: ModelInfo, precision: Precision) -> RunResult | None:
    """The run sized from the estimate's fake-tensor step (``estimate.trace_step``); None where it cannot step."""
    try:
        st = est.trace_step(model_spec, precision, optimizer)
    except BadInput:
        raise
    except Exception:  # a missing extra, an optimizer that cannot step: the meta sizing says so in its row
        return None
    note = None
    if st.scalar_reads:
        note = (f"fake tensors have no values: {st.scalar_reads} scalar reads (Tensor.item) answered with 1 "
                "while sizing")
    memory = MemoryResult(source="fake", state_bytes=sum(st.state_bytes_by_key.values()),
                          state_bytes_by_key=dict(st.state_bytes_by_key), param_bytes=info.param_bytes,
                          grad_bytes=info.grad_bytes)
    return RunResult(optimizer=optimizer, impl=st.impl, status="ok", memory=memory,
                     note="; ".join(filter(None, [note, st.state_note])) or None)


def _add_estimate(run: RunResult, model_spec, spec: ProfileSpec, precision: Precision) -> None:
    """Fill the fake-trace figures of an ok run; a failed trace leaves them null and says why."""
    try:
        e = est.estimate_step(model_spec, precision, run.optimizer, spec.batch_size, spec.seq_len)
    except BadInput:
        raise
    except Exception as exc:
        run.add_note(f"no step estimate ({error_text(exc)})")
        return
    memory = run.memory
    memory.activation_peak_bytes = e.activation_peak_bytes
    memory.step_transient_bytes = e.step_transient_bytes
    memory.estimated_peak_bytes = e.peak_bytes
    memory.details = {"forward_backward_peak_bytes": e.forward_backward_peak_bytes, **e.details}
    if "moe_routing" in e.details:
        run.add_note(e.details["moe_routing"])


def size_profile(spec: ProfileSpec, model_spec, optimizers: list[str], *, estimate: bool = True,
                 on_progress: ProgressCallback | None = None) -> ProfileResult:
    """The profile of ``optimizers`` on ``model_spec``, sized on meta (no device, no printing).

    State, parameter and gradient bytes are exact from the meta device (memory.source "meta");
    with ``estimate`` the fake-tensor step trace adds activation_peak_bytes, step_transient_bytes
    and estimated_peak_bytes (memory.source "fake"). A run that fails becomes status "error".
    ``timing_s`` says the seconds spent sizing and estimating. Progress: one task per optimizer,
    stages "sizing", "estimate", then the run's status.
    """
    say = report_to(on_progress)
    precision = resolve_precision(spec.precision)
    for name in optimizers:
        resolve_optimizer(name)  # unknown names are bad input, before any work
    if estimate:
        _check_shape(model_spec, spec)
    units = 2 if estimate else 1
    t0 = time.perf_counter()
    # the fake model the step traces use (cached), unless every trace is read from the disk cache
    traced = estimate and not all(est.step_trace_stored(model_spec, precision, name) for name in optimizers)
    model = _fake_model(model_spec, precision) if traced else None
    model = model if model is not None else meta_model(model_spec, precision)
    info = model_info(model, model_spec)
    runs = []
    meta = None if estimate else model
    for name in optimizers:
        say(Progress(name, 0, units, "sizing"))
        run = _traced_run(model_spec, name, info, precision) if estimate else None
        if run is None:
            meta = meta if meta is not None else meta_model(model_spec, precision)
            run = _size_run(meta, name, estimate, info, precision)
        runs.append(run)
        if not estimate or runs[-1].status != "ok":
            say(Progress(name, units, units, runs[-1].status))
    del model, meta
    t1 = time.perf_counter()
    if estimate:
        for run in runs:
            if run.status == "ok":
                say(Progress(run.optimizer, 1, units, "estimate"))
                _add_estimate(run, model_spec, spec, precision)
                say(Progress(run.optimizer, units, units, run.status))
    t2 = time.perf_counter()
    return ProfileResult(spec, info, runs, Environment.current(dict(META_DEVICE)),
                         timing_s={"sizing": round(t1 - t0, 3), "estimate": round(t2 - t1, 3),
                                   "total": round(t2 - t0, 3)})


def _fake_model(model_spec, precision: Precision) -> torch.nn.Module | None:
    """The estimate's fake model with gradients; None where it cannot be built (the meta sizing goes on alone)."""
    try:
        return est.fake_model_with_grads(model_spec, precision.param_dtype)[1]
    except BadInput:
        raise
    except Exception:
        return None


def _check_shape(model_spec, spec: ProfileSpec) -> None:
    """Batch shape problems are the user's (BadInput), raised before any tracing."""
    from sgdsai_cli.models import make_batch

    make_batch(model_spec, spec.batch_size, spec.seq_len, device="meta")
