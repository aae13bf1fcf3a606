"""Forward + backward traces at any batch size from a few: every allocation is affine in the batch.

    fb = forward_backward_at(model_spec, precision, batch_size=37, seq_len=512)   # a ForwardBackwardTrace

At a fixed sequence length a forward + backward runs the same ops whatever the batch, and every tensor
it allocates has the batch as one dimension or none: allocation ``i`` is ``c_i + d_i * B`` bytes (the
weight-sized ones have ``d_i = 0``). So the traces at B = 2 and B = 3 give every ``c_i`` and ``d_i``, and
the trace at any B >= 2 is the same event sequence with those sizes; replaying it through the estimate's
own segment tracker (``estimate._SegmentTracker``) gives the figures a trace of that batch would.
The planner asks for dozens of batch sizes (the largest batch per GPU, optimizer and precision): it
needs four traces (B = 1, which runs other ops in the loss, is traced itself) instead of one per batch.

That is checked, never assumed:

- the line is only built when the two traces run the same ops (same events, markers and frees) and
  the replays of both give the traced figures;
- a batch above the range checked so far (B = 3 at first) is answered only after a real trace at the
  top of a new range (``CONFIRM_BATCH``, or the next power of two at or above the batch) equals the
  line there event by event: the same ops at both ends of the range, and every size on the line;
- anything that fails (another op sequence, a kernel chosen by size, a model whose shapes depend on
  data) drops the line for that model, and every batch is traced.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

from sgdsai_cli.measure import estimate as est
from sgdsai_cli.precision import Precision

LINE_BATCHES = (2, 3)  # the line's two traces (B = 1 is traced itself: the loss of one sequence runs other ops)
CONFIRM_BATCH = 1 << 16  # the first confirmation: the planner's whole search range (its MAX_BATCH_LIMIT) at once


@dataclass
class BatchLine:
    """The forward + backward trace of one model, precision and sequence length as a function of the batch."""

    base: est.ForwardBackwardTrace  # B = LINE_BATCHES[0]
    slopes: tuple  # per event: bytes added per sample (allocations), None (frees, markers)
    batch_slope: int  # the batch's own bytes per sample
    checked_through: int = LINE_BATCHES[1]  # the largest batch a real trace has confirmed
    broken: bool = False  # a confirmation failed: every batch is traced
    confirmations: list[int] = field(default_factory=list)  # batches traced to confirm the line

    def trace(self, batch_size: int) -> est.ForwardBackwardTrace:
        """The trace at ``batch_size`` (at least ``LINE_BATCHES[0]``) from the line (no tracing)."""
        t0 = time.perf_counter()
        n = batch_size - LINE_BATCHES[0]
        events = tuple(ev if d is None else ("a", ev[1], ev[2] + n * d) for ev, d in zip(self.base.events, self.slopes))
        return _replay(self.base, events, self.base.batch_bytes + n * self.batch_slope, t0)


def _replay(like: est.ForwardBackwardTrace, events: tuple, batch_bytes: int, t0: float) -> est.ForwardBackwardTrace:
    """The figures of ``events`` (a trace's, or a synthesised one) replayed through the segment tracker."""
    tracker = est._SegmentTracker(record_events=True)
    tracker.active = True  # frees are recorded, as during the traced run
    tracker.ops = like.ops
    notes = list(like.grad_notes)
    sizes: dict[int, int] = {}
    tags: dict[int, object] = {}
    k = 0
    body = events[:-1] if events and events[-1] == ("m", "end") else events  # close() marks the end again
    for i, ev in enumerate(body):
        while k < len(notes) and notes[k][0] == i:
            tracker.note_grad(notes[k][1])
            k += 1
        if ev[0] == "a":
            tag, _ = tracker.count_allocation(ev[2])
            sizes[ev[1]], tags[ev[1]] = ev[2], tag
        elif ev[0] == "f":
            tracker.count_free(sizes[ev[1]], tags[ev[1]], ev[1])
        else:
            tracker.mark(ev[1])
    for _, nbytes in notes[k:]:
        tracker.note_grad(nbytes)
    return est.forward_backward_result(tracker.close(), tracker, batch_bytes, like.layers, like.traced_layers, t0)


def canonical(events: tuple) -> tuple:
    """``events`` with each run of consecutive frees in key order.

    Storages freed together (the autocast cache cleared, a list of saved tensors dropped) die in an order
    set by addresses, which differ from trace to trace; within such a run live bytes only fall, so the
    order changes no figure, and the caching allocator's free blocks merge to the same segments.
    """
    out: list = []
    run: list = []
    for ev in events:
        if ev[0] == "f":
            run.append(ev)
            continue
        out += sorted(run, key=lambda e: e[1])
        run = []
        out.append(ev)
    return tuple(out + sorted(run, key=lambda e: e[1]))


def _same(a: est.ForwardBackwardTrace, b: est.ForwardBackwardTrace) -> bool:
    return (canonical(a.events) == canonical(b.events) and a.grad_notes == b.grad_notes
            and a.batch_bytes == b.batch_bytes and a.activation_peak_bytes == b.activation_peak_bytes
            and a.forward_backward_peak_bytes == b.forward_backward_peak_bytes)


def _shape(events: tuple) -> tuple:
    """The events without allocation sizes (what must not change with the batch)."""
    return tuple(ev[:2] for ev in events)


@functools.lru_cache(maxsize=32)
def batch_line(model_spec, precision: Precision, seq_len: int) -> BatchLine | None:
    """The line through the ``LINE_BATCHES`` traces; None where they run different ops."""
    b1, b2 = LINE_BATCHES
    try:
        t1, t2 = (est.trace_forward_backward(model_spec, precision, b, seq_len) for b in (b1, b2))
    except Exception:  # a trace that fails: the caller's own trace of that batch raises it where it belongs
        return None
    e1, e2 = canonical(t1.events), canonical(t2.events)
    if not (_shape(e1) == _shape(e2) and t1.grad_notes == t2.grad_notes):
        return None
    slopes = tuple(None if a[0] != "a" else b[2] - a[2] for a, b in zip(e1, e2))
    line = BatchLine(dataclasses.replace(t1, events=e1), slopes, t2.batch_bytes - t1.batch_bytes)
    if not all(_same(line.trace(b), t) for b, t in ((b1, t1), (b2, t2))):
        return None
    return line


def forward_backward_at(model_spec, precision: Precision, batch_size: int, seq_len: int) -> est.ForwardBackwardTrace:
    """The forward + backward trace at ``batch_size``: from the checked batch line where there is one, else traced."""
    line = batch_line(model_spec, precision, seq_len)
    if line is None or line.broken or batch_size < LINE_BATCHES[0]:
        return est.trace_forward_backward(model_spec, precision, batch_size, seq_len)
    if batch_size > line.checked_through:
        confirm = max(CONFIRM_BATCH, 1 << (batch_size - 1).bit_length())  # a power of two at or above it
        line.confirmations.append(confirm)
        try:
            traced = est.trace_forward_backward(model_spec, precision, confirm, seq_len)
        except Exception:
            traced = None
        if traced is None or not _same(line.trace(confirm), traced):
            line.broken = True
            return est.trace_forward_backward(model_spec, precision, batch_size, seq_len)
        line.checked_through = confirm
    return line.trace(batch_size)
