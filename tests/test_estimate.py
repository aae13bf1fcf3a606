"""The fake-tensor allocation trace: exact bytes, the depth extension, and the step transients."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.models import build_model, resolve_model
from sgdsai_cli.precision import resolve_precision


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


@pytest.mark.parametrize("mode", [_fake_mode, contextlib.nullcontext], ids=["fake", "cpu"])
def test_tracker_counts_allocations_and_frees_exactly(mode):
    """One tracker for fake tensors (the estimate) and real CPU tensors (real runs)."""
    with mode():
        a = torch.empty(100)  # 400 bytes, made before tracking: not counted
        tracker = LiveTracker()
        with tracker:
            assert tracker.active
            b = a * 2  # +400
            c = b.view(10, 10)  # a view: no new storage
            b.add_(1)  # in place: nothing
            d = torch.empty(50, dtype=torch.float64)  # +400 -> 800 live
            del b, c, d  # -800
            e = a.to(torch.bfloat16)  # +200
        assert not tracker.active
        assert tracker.peak == 800
        assert tracker.live == 200
        tracker.reset_peak()
        assert tracker.peak == 200
        del e  # freed after the mode ended: still counted
        assert tracker.live == 0


def test_tracker_start_stop_outside_a_with_block():
    tracker = LiveTracker().start()
    x = torch.ones(25)  # 100 bytes
    tracker.stop()
    tracker.stop()  # twice is harmless
    y = torch.ones(25)  # untracked
    assert (tracker.live, tracker.peak) == (100, 100)
    del x, y
    assert tracker.live == 0


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-vit"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "amp-bf16", "amp-fp16"])
def test_depth_extension_equals_full_trace(model, precision):
    """A 6-block model traced at depth 3 and extended gives the full trace's peaks to the byte."""
    spec = est.with_depth(resolve_model(model), 6)
    prec = resolve_precision(precision)
    short = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=True)
    full = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=False)
    assert short.traced_layers == 3 and full.traced_layers == 6 and short.layers == 6
    assert short.ops < full.ops
    assert short.activation_peak_bytes == full.activation_peak_bytes
    assert short.forward_backward_peak_bytes == full.forward_backward_peak_bytes


def test_activations_grow_with_batch_and_depth():
    spec = resolve_model("tiny-llama")
    prec = resolve_precision("fp32")
    one, four = est.activation_bytes(spec, prec, 1, 32), est.activation_bytes(spec, prec, 4, 32)
    assert 3 * one < four <= 4 * one + 1024 * 1024
    deeper = est.with_depth(spec, 8)
    assert est.activation_bytes(deeper, prec, 1, 32) > one


def _param_sizes(model: str, precision: str) -> tuple[int, int]:
    m = build_model(resolve_model(model), device="meta", dtype=resolve_precision(precision).param_dtype)
    sizes = [p.numel() * p.element_size() for p in m.parameters()]
    return sum(sizes), max(sizes)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-vit"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_transients(model, precision):
    total, largest = _param_sizes(model, precision)
    spec, prec = resolve_model(model), resolve_precision(precision)
    foreach = est.trace_step(spec, prec, "adamw-foreach")
    fused = est.trace_step(spec, prec, "adamw-fused")
    default = est.trace_step(spec, prec, "adamw")
    sgdsai = est.trace_step(spec, prec, "sgdsai")
    # foreach AdamW: _foreach_sqrt(exp_avg_sq) is a full copy of the second moments
    assert foreach.impl == "foreach" and foreach.step_transient_bytes >= total
    # torch's default on CUDA is foreach: the estimate describes that path
    assert default.impl == "foreach" and default.step_transient_bytes == foreach.step_transient_bytes
    # fused AdamW (fake CPU tensors run the fused op's meta kernel): no temporary
    assert fused.impl == "fused" and fused.step_transient_bytes == 0
    assert sgdsai.step_transient_bytes <= largest
    for trace in (foreach, fused, default):
        assert trace.state_bytes == 2 * total + 4 * _tensor_count(model)
    assert sgdsai.state_bytes == total + 4 * _tensor_count(model)


def _tensor_count(model: str) -> int:
    return len(list(build_model(resolve_model(model), device="meta").parameters()))


@pytest.mark.parametrize("optimizer", ["sgd", "adafactor", "sgdsai-ref", "adamw-loop", "torch:Adagrad"])
def test_step_trace_runs_for_other_optimizers(optimizer):
    trace = est.trace_step(resolve_model("tiny-gpt2"), resolve_precision("fp32"), optimizer)
    assert trace.state_bytes > 0 and trace.step_transient_bytes >= 0


def test_estimate_step_peak_is_the_larger_phase():
    spec, prec = resolve_model("tiny-gpt2"), resolve_precision("amp-bf16")
    e = est.estimate_step(spec, prec, "adamw-foreach", 2, 64)
    assert e.param_bytes == e.grad_bytes == 141_056 * 4  # amp: fp32 parameters and gradients
    assert e.peak_bytes == e.param_bytes + e.state_bytes + max(e.forward_backward_peak_bytes,
                                                               e.grad_bytes + e.step_transient_bytes)
    assert e.forward_backward_peak_bytes >= e.activation_peak_bytes > 0
    assert e.details["traced_layers"] == 2 and e.details["layers"] == 2


def test_llama2_7b_fp32_estimate_shows_the_foreach_copy():
    spec, prec = resolve_model("llama2-7b"), resolve_precision("fp32")
    foreach = est.estimate_step(spec, prec, "adamw-foreach", 1, 512)
    fused = est.estimate_step(spec, prec, "adamw-fused", 1, 512)
    sgdsai = est.estimate_step(spec, prec, "sgdsai", 1, 512)
    params = 26_953_662_464
    assert foreach.step_transient_bytes == params and fused.step_transient_bytes == 0
    assert sgdsai.step_transient_bytes == 0
    assert foreach.details["traced_layers"] == 3 and foreach.details["layers"] == 32
    # with no transient, SGD-SaI's step peaks at params + grads + state
    assert sgdsai.peak_bytes == 3 * params + 291 * 4 + max(0, foreach.forward_backward_peak_bytes - params)
