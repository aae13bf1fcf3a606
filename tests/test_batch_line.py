"""The batch line: forward + backward traces at any batch from a few, equal to real traces, checked, with a fallback."""

from __future__ import annotations

import dataclasses

import pytest

from sgdsai_cli.analysis import plan as plan_mod
from sgdsai_cli.measure import batch_line as bl
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.models import resolve_model
from sgdsai_cli.precision import resolve_precision

CASES = [  # (model, precision, seq_len, checkpointing)
    ("tiny-llama", "fp32", 64, "none"),
    ("tiny-gpt2", "amp-bf16", 32, "none"),
    ("tiny-vit", "bf16", 0, "none"),
    ("tiny-llama", "bf16", 48, "full"),
]


def _spec(model: str, checkpointing: str):
    spec = resolve_model(model)
    return spec if checkpointing == "none" else dataclasses.replace(spec, checkpointing=checkpointing)


def _figures(t) -> tuple:
    return bl.canonical(t.events), t.activation_peak_bytes, t.forward_backward_peak_bytes, t.batch_bytes


def _seq(spec, seq_len: int) -> int:
    return seq_len or 1  # a ViT's "sequence" is its image; the batch helper ignores it


@pytest.mark.parametrize("model, precision, seq_len, checkpointing", CASES)
def test_the_line_gives_the_trace_of_every_batch(model, precision, seq_len, checkpointing):
    spec, prec = _spec(model, checkpointing), resolve_precision(precision)
    seq = _seq(spec, seq_len)
    line = bl.batch_line(spec, prec, seq)
    assert line is not None
    for b in (2, 5, 11, 37):
        real = est.trace_forward_backward(spec, prec, b, seq)
        synth = line.trace(b)
        assert bl.canonical(synth.events) == bl.canonical(real.events)  # frees freed together: any order
        assert synth.activation_peak_bytes == real.activation_peak_bytes
        assert synth.forward_backward_peak_bytes == real.forward_backward_peak_bytes
        assert synth.batch_bytes == real.batch_bytes


def test_batch_one_is_traced_and_large_batches_are_confirmed_first():
    spec, prec = resolve_model("tiny-llama"), resolve_precision("fp32")
    bl.batch_line.cache_clear()
    assert bl.forward_backward_at(spec, prec, 1, 64) == est.trace_forward_backward(spec, prec, 1, 64)
    line = bl.batch_line(spec, prec, 64)
    assert line.confirmations == [] and line.checked_through == bl.LINE_BATCHES[1]
    bl.forward_backward_at(spec, prec, 100, 64)
    assert line.confirmations == [bl.CONFIRM_BATCH] and line.checked_through == bl.CONFIRM_BATCH
    bl.forward_backward_at(spec, prec, 1000, 64)  # inside the confirmed range: no trace
    assert line.confirmations == [bl.CONFIRM_BATCH]


def _doctor(monkeypatch, batch: int, change):
    """Make the trace at ``batch`` come back as ``change(trace)`` (other ops there); return the real tracer."""
    real = est.trace_forward_backward

    def traced(model_spec, precision, batch_size, seq_len, extrapolate=True):
        t = real(model_spec, precision, batch_size, seq_len, extrapolate)
        return change(t) if batch_size == batch else t

    monkeypatch.setattr(est, "trace_forward_backward", traced)
    return real


def _one_more_allocation(t):
    return dataclasses.replace(t, events=t.events[:1] + (("a", 10**9, 8),) + t.events[1:])


def _one_byte_more(t):
    first = next(i for i, ev in enumerate(t.events) if ev[0] == "a")
    ev = t.events[first]
    return dataclasses.replace(t, events=t.events[:first] + (("a", ev[1], ev[2] + 1),) + t.events[first + 1:])


@pytest.mark.parametrize("change", [_one_more_allocation, _one_byte_more])
def test_a_confirmation_that_fails_drops_the_line(monkeypatch, change):
    spec, prec = resolve_model("tiny-gpt2"), resolve_precision("bf16")
    bl.batch_line.cache_clear()
    real = _doctor(monkeypatch, bl.CONFIRM_BATCH, change)
    line = bl.batch_line(spec, prec, 32)
    got = bl.forward_backward_at(spec, prec, 7, 32)  # above B = 3: confirmed at CONFIRM_BATCH first, which fails
    assert line.broken and _figures(got) == _figures(real(spec, prec, 7, 32))  # traced, not synthesised
    bl.batch_line.cache_clear()


def test_traces_that_run_different_ops_get_no_line(monkeypatch):
    spec, prec = resolve_model("tiny-llama"), resolve_precision("bf16")
    bl.batch_line.cache_clear()
    real = _doctor(monkeypatch, 3, lambda t: dataclasses.replace(t, events=t.events + (("m", "extra"),)))
    assert bl.batch_line(spec, prec, 32) is None
    assert bl.forward_backward_at(spec, prec, 9, 32).events == real(spec, prec, 9, 32).events
    bl.batch_line.cache_clear()


def test_plan_rows_are_the_same_with_and_without_the_line(monkeypatch):
    """The planner's answers (largest batch, reserved bytes) from the line equal those from a trace per batch."""
    from sgdsai_cli.analysis.gpus import resolve_gpu

    gpus = [resolve_gpu("l4-24gb")]
    spec = resolve_model("tiny-llama")
    context = gpus[0].memory_bytes - 300 * 2**20  # 300 MiB usable: batches in the tens
    with_line = plan_mod.plan_rows(spec, ["fp32", "bf16"], gpus, ["sgdsai", "adamw"], seq_len=128,
                                   context_bytes=context)
    assert any(r.max_batch_size > bl.LINE_BATCHES[1] for r in with_line)
    monkeypatch.setattr(bl, "batch_line", lambda *a: None)
    traced = plan_mod.plan_rows(spec, ["fp32", "bf16"], gpus, ["sgdsai", "adamw"], seq_len=128,
                                context_bytes=context)
    assert with_line == traced
