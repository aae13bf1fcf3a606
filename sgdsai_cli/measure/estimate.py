"""Training-step memory estimate without a GPU: an exact allocation trace over fake tensors.

One forward, backward and optimizer step run under ``FakeTensorMode`` (tensors with shapes,
dtypes and devices but no data), with CPU as the fake device so that the kernels chosen are real
ones (scaled-dot-product attention takes the flash path that keeps O(S) memory, as on a GPU;
the meta device would pick the math path and its [B, H, S, S] score matrix). A
``TorchDispatchMode`` (``tracker.LiveTracker``) sees every op: each output storage that is not one of the
op's inputs is an allocation (its ``nbytes``), and a weak reference on the storage object reports
its free. Live bytes and their peak are therefore exact for the op sequence PyTorch runs, before
the CUDA caching allocator's rounding (blocks of 512 bytes and larger segments) and without the
CUDA context (about 0.3-0.6 GiB per process): a real run adds both.

What is reported (all bytes):

- ``activation_peak_bytes``: the peak, during forward and backward, of everything that is not a
  parameter, optimizer state or an accumulated gradient: saved activations, temporaries, the
  batch, autocast's cached low-precision weight copies (amp precisions).
- ``forward_backward_peak_bytes``: the same peak with the gradients accumulated so far included
  (gradients appear during backward while activations are freed).
- ``step_transient_bytes``: what ``optimizer.step()`` allocates on top of parameters, gradients
  and its own state: ``max(first-step peak, state + steady-step peak) - state``. Foreach AdamW's
  ``_foreach_sqrt(exp_avg_sq)`` makes a full-size copy of the second moments (as large as all
  parameters); fused AdamW and SGDSaI allocate (almost) nothing.
- ``peak_bytes``: the steady-state step's peak, gradients set to None by ``zero_grad()``:
  ``params + buffers + state + max(forward_backward_peak, batch + grads + step_transient)`` (the
  training loop still holds its batch during the step; buffers: a
  transformers model's registered buffers, such as rotary ``inv_freq``; our own models have none).

Depth: a model's repeated blocks (``models.decoder_layers``) are identical modules that run the
same ops, so a model of L > 3 layers is traced at depth 3 only and the timeline is extended
exactly, not fitted. Markers cut the trace into segments: before the blocks, the forward of
block 0, 1, 2, the head and loss, the backward of block 2, 1, 0, and the rest. Each segment
records its start, its highest point and its net change of live bytes. The L-layer timeline is
the same sequence with the middle segments (forward and backward of block 1) repeated L - 2
times; a segment repeated n times with net change d peaks at ``start + rise + (n - 1) * max(d, 0)``.
The tests check this against a full trace of deeper tiny models (equal to the byte).
Only models whose blocks are all alike are extended (``models.depth_reducible``): a
transformers model whose layers differ (``layer_types``, sliding/global alternation, dense and
MoE blocks) and a user's factory model are traced at full depth.

Each trace is kept in this process (``functools.lru_cache``) and on disk (``trace_cache``: the same
inputs and the same code read the record back instead of tracing).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch

from sgdsai_cli.measure import trace_cache
from sgdsai_cli.measure.marked_step import autocast, marked_step
from sgdsai_cli.measure.model_bytes import (  # noqa: F401 (estimate.*)
    buffer_bytes,
    grad_bytes_of,
    param_bytes,
    quant_state_bytes,
)
from sgdsai_cli.measure.stepping import SymbolicScalars, symbolic_step, use_cuda_default_path
from sgdsai_cli.measure.storage import state_bytes_by_key, state_tensors, unique_bytes
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.precision import Precision

# Depth traced for models with more layers: first, one middle and last block.
TRACE_DEPTH = 3


@dataclass
class _Segment:
    label: str
    start_live: int
    start_act: int
    max_live: int
    max_act: int
    end_live: int = 0
    end_act: int = 0
    freed_by_origin: dict[str, int] = field(default_factory=dict)  # bytes freed here, by allocating segment


class _SegmentTracker(LiveTracker):
    """The live-tensor tracker, cut into segments by ``mark``; gradients apart from activations.

    ``grad_bytes``: the part of ``live`` that is accumulated ``.grad`` (reported by ``note_grad``);
    activations are ``live - grad_bytes``. Each segment keeps its start, its highest point and,
    per allocating segment, the bytes freed in it.
    """

    def __init__(self, record_events: bool = False) -> None:
        super().__init__(record_events)
        self.grad_bytes = 0
        self.act_peak = 0
        self.segments: list[_Segment] = []
        self._seg = _Segment("start", 0, 0, 0, 0)
        # with events: (events recorded before it, bytes) of each note_grad, so a replay can repeat it
        self.grad_notes: list[tuple[int, int]] | None = [] if record_events else None

    def allocated(self, nbytes: int) -> str:
        act = self.live - self.grad_bytes
        self.act_peak = max(self.act_peak, act)
        seg = self._seg
        seg.max_live = max(seg.max_live, self.live)
        seg.max_act = max(seg.max_act, act)
        return seg.label

    def freed(self, nbytes: int, tag: str) -> None:
        freed = self._seg.freed_by_origin
        freed[tag] = freed.get(tag, 0) + nbytes

    def note_grad(self, nbytes: int) -> None:
        """A parameter's gradient (``nbytes``, already live) was accumulated: it is no activation now."""
        self.grad_bytes += nbytes
        if self.grad_notes is not None:
            self.grad_notes.append((len(self.events), nbytes))

    def mark(self, label: str) -> None:
        """Close the current segment and open ``label`` at the current live bytes."""
        seg = self._seg
        seg.end_live, seg.end_act = self.live, self.live - self.grad_bytes
        self.segments.append(seg)
        if self.events is not None:
            self.events.append(("m", label))
        act = self.live - self.grad_bytes
        self._seg = _Segment(label, self.live, act, self.live, act)

    def close(self) -> list[_Segment]:
        self.mark("end")
        return [s for s in self.segments if s.label != "start" or s.max_live or s.end_live]


@dataclass(frozen=True)
class ForwardBackwardTrace:
    """Forward + backward of one batch: peaks relative to the model states alive before it."""

    activation_peak_bytes: int
    forward_backward_peak_bytes: int
    layers: int  # blocks in the model
    traced_layers: int  # blocks actually traced (TRACE_DEPTH for deeper models)
    ops: int  # ops dispatched in the trace
    seconds: float
    events: tuple | None = None  # the trace's allocations, frees and markers (allocator_trace)
    batch_bytes: int = 0  # the batch's storage, alive through the optimizer step too (the loop holds it)
    grad_notes: tuple = ()  # (events before it, bytes) of each accumulated gradient (batch_line replays them)


@dataclass(frozen=True)
class StepTrace:
    """Two optimizer steps over fake parameters with gradients."""

    impl: str | None
    state_bytes: int
    first_step_peak_bytes: int  # above params + grads, state created during the step included
    steady_step_peak_bytes: int  # above params + grads + state
    step_transient_bytes: int
    scalar_reads: int  # Tensor.item() calls answered with 1 (see SymbolicScalars)
    seconds: float
    first_events: tuple = ()  # allocations and frees of the first and a steady step (allocator_trace)
    steady_events: tuple = ()
    state_bytes_by_key: dict = field(default_factory=dict)  # the state after the first step, per key (storage)
    state_note: str | None = None  # registry.state_note of the optimizer stepped (adamw8bit, muon)


@dataclass
class StepEstimate:
    """The estimate of one training step for one optimizer (bytes)."""

    optimizer: str
    impl: str | None
    precision: str
    batch_size: int
    seq_len: int
    param_bytes: int
    grad_bytes: int
    state_bytes: int
    activation_peak_bytes: int
    forward_backward_peak_bytes: int
    step_transient_bytes: int
    peak_bytes: int
    details: dict = field(default_factory=dict)
    reserved_peak_bytes: int | None = None  # CUDA caching allocator's reserved at the peak (allocator model)


# ----------------------------------------------------------------------------------------------
# building fake models


def model_depth(model_spec) -> int:
    from sgdsai_cli.models.depth import model_depth as depth

    return depth(model_spec)


def with_depth(model_spec, depth: int):
    """The same model with ``depth`` repeated blocks (everything else unchanged)."""
    from sgdsai_cli.models.depth import with_depth as rebuilt

    return rebuilt(model_spec, depth)


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


def _build_fake(model_spec, dtype: torch.dtype, fake_mode):
    from sgdsai_cli import models

    with fake_mode:
        return models.build_model(model_spec, device="cpu", dtype=dtype)


_autocast = autocast  # the former name (parallel, parallel_ddp)


# ----------------------------------------------------------------------------------------------
# forward + backward


def _trace_model(model_spec, precision: Precision, batch_size: int, seq_len: int, depth: int):
    """Trace forward + backward of ``model_spec`` at ``depth`` blocks; return (segments, tracker)."""
    from sgdsai_cli import models

    spec = with_depth(model_spec, depth) if depth != model_depth(model_spec) else model_spec
    fake_mode = _fake_mode()
    model = _build_fake(spec, precision.param_dtype, fake_mode)
    tracker = _SegmentTracker(record_events=True)
    handles = []
    counted: set[int] = set()

    def grad_hook(p) -> None:
        if id(p) not in counted:
            counted.add(id(p))
            tracker.note_grad(p.grad.untyped_storage().nbytes())

    for p in models.trainable_parameters(model):
        handles.append(p.register_post_accumulate_grad_hook(grad_hook))
    try:
        batch_bytes = marked_step(tracker, fake_mode, models.decoder_layers(model), spec, precision, model, model,
                                  batch_size, seq_len)
    finally:
        for h in handles:
            h.remove()
    return tracker.close(), tracker, batch_bytes


def _extend(segments: list[_Segment], traced: int, layers: int) -> tuple[int, int]:
    """Peak live and peak activation bytes of the ``layers``-block timeline from a ``traced``-block trace.

    The middle blocks' segments ("F1", "B1") repeat ``layers - 2`` times. Leaving autocast ("exit")
    frees the cached weight copies of every block at once: there, bytes allocated in "F1" are
    freed ``layers - 2`` times over. Every other free is matched one to one by the repetition.
    """
    extend = layers > traced
    times = {"F1": layers - 2, "B1": layers - 2} if extend else {}
    live = act = peak = act_peak = 0
    for s in segments:
        n = times.get(s.label, 1)
        if n <= 0:
            continue
        d_live, d_act = s.end_live - s.start_live, s.end_act - s.start_act
        if s.label == "exit" and extend:
            extra = s.freed_by_origin.get("F1", 0) * (layers - 3)
            d_live, d_act = d_live - extra, d_act - extra
        peak = max(peak, live + (s.max_live - s.start_live) + (n - 1) * max(d_live, 0))
        act_peak = max(act_peak, act + (s.max_act - s.start_act) + (n - 1) * max(d_act, 0))
        live += n * d_live
        act += n * d_act
    return peak, act_peak


@functools.lru_cache(maxsize=64)
def trace_forward_backward(model_spec, precision: Precision, batch_size: int, seq_len: int,
                           extrapolate: bool = True) -> ForwardBackwardTrace:
    """Exact forward + backward memory trace (see the module docstring); cached per arguments."""
    from sgdsai_cli.models.depth import depth_reducible

    def traced() -> ForwardBackwardTrace:
        t0 = time.perf_counter()
        layers = model_depth(model_spec)
        depth = min(layers, TRACE_DEPTH) if extrapolate and depth_reducible(model_spec) else layers
        segments, tracker, batch_bytes = _trace_model(model_spec, precision, batch_size, seq_len, depth)
        return forward_backward_result(segments, tracker, batch_bytes, layers, depth, t0)

    return trace_cache.cached(ForwardBackwardTrace, "forward_backward",
                              (model_spec, precision, batch_size, seq_len, extrapolate), traced)


def forward_backward_result(segments: list[_Segment], tracker: _SegmentTracker, batch_bytes: int, layers: int,
                            depth: int, t0: float) -> ForwardBackwardTrace:
    """The trace's figures from its closed segments (a traced run, or a replay of its events)."""
    peak, act_peak = _extend(segments, depth, layers)
    return ForwardBackwardTrace(
        activation_peak_bytes=act_peak,
        forward_backward_peak_bytes=peak,
        layers=layers,
        traced_layers=depth,
        ops=tracker.ops,
        seconds=time.perf_counter() - t0,
        events=tuple(tracker.events),
        batch_bytes=batch_bytes,
        grad_notes=tuple(tracker.grad_notes),
    )


def activation_bytes(model_spec, precision: Precision, batch_size: int, seq_len: int) -> int:
    """Peak activation bytes of one forward + backward (cached; a depth-3 trace, ~0.1-1 s)."""
    return trace_forward_backward(model_spec, precision, batch_size, seq_len).activation_peak_bytes


# ----------------------------------------------------------------------------------------------
# optimizer step


@functools.lru_cache(maxsize=2)
def fake_model_with_grads(model_spec, dtype: torch.dtype):
    """The full model as fake CPU tensors, every trainable parameter with a fake gradient (shared by step traces)."""
    from sgdsai_cli.models import trainable_parameters

    fake_mode = _fake_mode()
    model = _build_fake(model_spec, dtype, fake_mode)
    with fake_mode:
        for p in trainable_parameters(model):
            p.grad = torch.empty_like(p)
    return fake_mode, model


def trace_step(model_spec, precision: Precision, optimizer: str) -> StepTrace:
    """Two ``step()`` calls of ``optimizer`` over the full model's fake parameters and gradients (cached).

    Checkpointing changes the forward and backward only: the same model with and without it shares
    one step trace (the planner's recipe ladder asks for both)."""
    return _trace_step(_without_checkpointing(model_spec), precision, optimizer)


def _without_checkpointing(model_spec):
    if getattr(model_spec, "checkpointing", "none") == "none":
        return model_spec
    import dataclasses

    return dataclasses.replace(model_spec, checkpointing="none")


def step_trace_stored(model_spec, precision: Precision, optimizer: str) -> bool:
    """True where the disk cache (``trace_cache``) holds ``trace_step``'s record: it will be read, not traced."""
    return trace_cache.stored("step", (_without_checkpointing(model_spec), precision, optimizer))


@functools.lru_cache(maxsize=64)
def _trace_step(model_spec, precision: Precision, optimizer: str) -> StepTrace:
    return trace_cache.cached(StepTrace, "step", (model_spec, precision, optimizer),
                              lambda: _traced_step(model_spec, precision, optimizer))


def _traced_step(model_spec, precision: Precision, optimizer: str) -> StepTrace:
    from sgdsai_cli.models import trainable_named_parameters
    from sgdsai_cli.optim.registry import build_optimizer, state_note

    t0 = time.perf_counter()
    fake_mode, model = fake_model_with_grads(model_spec, precision.param_dtype)
    with fake_mode:
        scalars = SymbolicScalars()
        first = LiveTracker(record_events=True)
        with first:  # construction too: master weights (bf16-master) are state made before the first step
            opt, _ = build_optimizer(optimizer, trainable_named_parameters(model), precision.master_dtype)
            impl = use_cuda_default_path(opt)
            scalars.optimizer = opt  # its own step counters' reads are not counted
            symbolic_step(opt, scalars)
        state_bytes = unique_bytes(state_tensors(opt))
        by_key, note = state_bytes_by_key(opt), state_note(opt)
        steady = LiveTracker(record_events=True)
        with steady:
            symbolic_step(opt, scalars)
    del opt
    transient = max(first.peak, state_bytes + steady.peak) - state_bytes
    return StepTrace(
        impl=impl,
        state_bytes=state_bytes,
        first_step_peak_bytes=first.peak,
        steady_step_peak_bytes=steady.peak,
        step_transient_bytes=transient,
        scalar_reads=scalars.reads,
        seconds=time.perf_counter() - t0,
        first_events=tuple(first.events),
        steady_events=tuple(steady.events),
        state_bytes_by_key=by_key,
        state_note=note,
    )


trace_step.cache_clear = _trace_step.cache_clear  # type: ignore[attr-defined]


def estimate_step(model_spec, precision: Precision, optimizer: str, batch_size: int, seq_len: int,
                  alloc_conf: str | None = None) -> StepEstimate:
    """Estimate one steady-state training step of ``optimizer`` (see the module docstring).

    ``reserved_peak_bytes``: the CUDA caching allocator's reserved bytes at the peak, from a replay of
    three training steps through ``allocator.CachingAllocatorModel`` configured by ``alloc_conf``
    (a ``PYTORCH_CUDA_ALLOC_CONF`` string; None: the variable of this process). ``details["allocator"]``
    says how (config, fragmentation, depth extension).
    """
    from sgdsai_cli.models import routing_details as models_routing

    fb = trace_forward_backward(model_spec, precision, batch_size, seq_len)
    st = trace_step(model_spec, precision, optimizer)
    params = param_bytes(model_spec, precision)
    buffers = buffer_bytes(model_spec, precision)  # transformers' rotary inv_freq, position ids, ...: 0 for ours
    buffers += quant_state_bytes(model_spec, precision)  # a QLoRA base's absmax and codes: held as buffers are
    grad_bytes = grad_bytes_of(model_spec, precision)  # the trainable parameters' (all, or a LoRA model's adapters)
    peak = params + buffers + st.state_bytes + max(fb.forward_backward_peak_bytes,
                                                   fb.batch_bytes + grad_bytes + st.step_transient_bytes)
    from sgdsai_cli.measure.allocator_trace import predict_step_reserved

    reserved = predict_step_reserved(model_spec, precision, fb, st, alloc_conf)
    return StepEstimate(
        optimizer=optimizer,
        impl=st.impl,
        precision=precision.name,
        batch_size=batch_size,
        seq_len=seq_len,
        param_bytes=params,
        grad_bytes=grad_bytes,
        state_bytes=st.state_bytes,
        activation_peak_bytes=fb.activation_peak_bytes,
        forward_backward_peak_bytes=fb.forward_backward_peak_bytes,
        step_transient_bytes=st.step_transient_bytes,
        peak_bytes=peak,
        details={
            "first_step_peak_bytes": st.first_step_peak_bytes,
            "steady_step_peak_bytes": st.steady_step_peak_bytes,
            "batch_bytes": fb.batch_bytes,
            "layers": fb.layers,
            "traced_layers": fb.traced_layers,
            "trace_ops": fb.ops,
            "trace_seconds": round(fb.seconds + st.seconds, 3),
            "reserved_peak_bytes": reserved.replay.reserved_peak_bytes,
            "allocator": reserved.details(),
            **({"buffer_bytes": buffer_bytes(model_spec, precision)} if buffer_bytes(model_spec, precision) else {}),
            **({"quant_state_bytes": quant_state_bytes(model_spec, precision)}
               if quant_state_bytes(model_spec, precision) else {}),
            **models_routing(model_spec),
        },
        reserved_peak_bytes=reserved.replay.reserved_peak_bytes,
    )
