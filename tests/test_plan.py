"""sgdsai_cli.analysis.plan: GPU counts per strategy, the max-batch search, rows, and the llama2-7b facts."""

from __future__ import annotations

import math

import pytest

from sgdsai_cli.analysis.gpus import DEFAULT_CONTEXT_SOURCE, GPU, GPUS
from sgdsai_cli.analysis.plan import (
    MAX_BATCH_LIMIT,
    gpus_needed,
    max_batch_size,
    plan,
    plan_rows,
)
from sgdsai_cli.errors import BadInput
from sgdsai_cli.render.plan import plan_table, plan_table_rows


def plan_document(*args, **kwargs) -> dict:
    return plan(*args, **kwargs).to_dict()

GB = 10**9
GiB = 1024**3
CONTEXT_BYTES = 1 * GiB  # a round allowance for the stand-in cards
P7B = 6_738_415_616


@pytest.mark.parametrize(
    ("p", "g", "s", "a", "usable", "expected"),
    [
        # everything fits one GPU: every strategy needs 1
        (10, 10, 20, 5, 100, {"ddp": 1, "zero1": 1, "zero2": 1, "zero3": 1}),
        # 40 + 40 + 80 + 10 = 170 > 100: DDP never; ZeRO-1: 80/(100-10-80) = 8; ZeRO-2: 120/50 -> 3; ZeRO-3: 160/90 -> 2
        (40, 40, 80, 10, 100, {"ddp": None, "zero1": 8, "zero2": 3, "zero3": 2}),
        # replicated params + grads leave no room: ZeRO-1 impossible, ZeRO-2 still possible
        (50, 45, 80, 10, 100, {"ddp": None, "zero1": None, "zero2": 4, "zero3": 2}),
        # the activations alone exceed the card: nothing works
        (1, 1, 1, 200, 100, {"ddp": None, "zero1": None, "zero2": None, "zero3": None}),
        # exactly full is a fit
        (25, 25, 50, 0, 100, {"ddp": 1, "zero1": 1, "zero2": 1, "zero3": 1}),
    ],
)
def test_gpus_needed(p, g, s, a, usable, expected):
    assert gpus_needed(p, g, s, a, usable) == expected


def counting(fn):
    calls = []

    def wrapped(b):
        calls.append(b)
        return fn(b)

    return wrapped, calls


@pytest.mark.parametrize(
    ("activation", "room", "expected"),
    [
        (lambda b: 100 * b, 1000, 10),
        (lambda b: 100 * b, 1099, 10),
        (lambda b: 100 * b, 99, 0),
        (lambda b: 100 * b, 0, 0),
        (lambda b: 100 * b + 50, 1000, 9),  # an offset: the linear guess overshoots, bisect fixes it
        (lambda b: 100 * b * b, 10_000, 10),  # super-linear: guess 100 fails, bisect down
        (lambda b: 10 * b if b < 40 else 10**9, 10_000, 39),  # a cliff: linear guess 1000 fails
        (lambda b: 1, 10**12, MAX_BATCH_LIMIT),  # capped
        (lambda b: 90 + b, 1000, 910),  # sub-linear: guess too small, double then bisect
    ],
)
def test_max_batch_size(activation, room, expected):
    fn, calls = counting(activation)
    assert max_batch_size(fn, room) == expected
    assert len(calls) <= 2 * math.ceil(math.log2(MAX_BATCH_LIMIT)) + 4


def test_max_batch_size_linear_costs_few_calls():
    fn, calls = counting(lambda b: 3_000_000 * b)
    assert max_batch_size(fn, 80 * GiB) == 80 * GiB // 3_000_000
    assert len(set(calls)) <= 4
    fn, calls = counting(lambda b: 500_000_000 + 3_000_000 * b)  # affine: an offset per step
    assert max_batch_size(fn, 80 * GiB) == (80 * GiB - 500_000_000) // 3_000_000
    assert len(set(calls)) <= 4


def fake_steps(bytes_per_param_state, transient=None):
    """A step_fn: params and grads of 1000 parameters, state (and step transient) per optimizer as given."""

    def step_fn(model_spec, precision, optimizer):
        width = 4 if precision == "fp32" else 2
        return {"impl": "loop", "param_bytes": width * 1000, "grad_bytes": width * 1000,
                "state_bytes": bytes_per_param_state[optimizer] * width * 1000,
                "step_transient_bytes": (transient or {}).get(optimizer, 0)}

    return step_fn


def fake_activation(per_sample):
    """(activation peak, forward/backward peak): the latter with all gradients of 1000 parameters on top."""
    def make(model_spec, precision, seq_len):
        grads = (4 if precision == "fp32" else 2) * 1000
        return lambda b: (per_sample * b, per_sample * b + grads)

    return make


def test_plan_rows_with_fakes():
    from sgdsai_cli.models import resolve_model

    gpus = [GPU("small", "small", CONTEXT_BYTES + 20_000, CONTEXT_BYTES),
            GPU("big", "big", CONTEXT_BYTES + 100_000, CONTEXT_BYTES)]
    rows = plan_rows(resolve_model("tiny-gpt2"), ["fp32", "bf16"], gpus, ["sgdsai", "adamw"], batch_size=2,
                     activation_fn=fake_activation(1000), step_fn=fake_steps({"sgdsai": 1, "adamw": 2}))
    table = {(r.optimizer, r.precision, r.gpu): r for r in rows}
    assert len(rows) == 8
    r = table[("adamw", "fp32", "small")]
    assert (r.model_state_bytes, r.activation_bytes) == (16_000, 2000)
    assert r.total_bytes == 18_000 + CONTEXT_BYTES
    assert r.fits and r.max_batch_size == 4  # (20000 - 16000) / 1000
    r = table[("sgdsai", "fp32", "small")]
    assert r.max_batch_size == 8
    assert table[("adamw", "bf16", "big")].max_batch_size == 92
    assert r.gpus_needed == {"ddp": 1, "zero1": 1, "zero2": 1, "zero3": 1}


@pytest.mark.parametrize(
    ("transient", "total", "fits", "max_batch"),
    [
        (0, 18_000, True, 4),  # no step temporaries: states + activations of batch 2
        (1_500, 18_000, True, 4),  # below the activations: hidden by them
        (3_000, 19_000, True, 4),  # above: the step sets the peak, batches still fit beside it
        (4_500, 20_500, False, 0),  # the step alone overflows the card whatever the batch
    ],
)
def test_step_transient_counts_against_activations(transient, total, fits, max_batch):
    from sgdsai_cli.models import resolve_model

    gpu = GPU("small", "small", CONTEXT_BYTES + 20_000, CONTEXT_BYTES)
    [r] = plan_rows(resolve_model("tiny-gpt2"), ["fp32"], [gpu], ["adamw"], batch_size=2,
                    activation_fn=fake_activation(1000), step_fn=fake_steps({"adamw": 2}, {"adamw": transient}))
    assert r.total_bytes - CONTEXT_BYTES == total
    assert (r.fits, r.max_batch_size) == (fits, max_batch)


def test_gpus_needed_with_transient():
    # P=G=10, S=20, A=5, T=20, usable 40: DDP 40+20=60 no; ZeRO-1 (20+20)/(40-5-20)=2.67->3;
    # ZeRO-2 (10+20+20)/(40-5-10)=2; ZeRO-3 60/35 -> 2
    assert gpus_needed(10, 10, 20, 5, 40, 20) == {"ddp": None, "zero1": 3, "zero2": 2, "zero3": 2}


def test_plan_rejects_bad_names():
    with pytest.raises(BadInput, match="unknown GPU 'h100'"):
        plan_document("tiny-gpt2", gpus=["h100"], activation_fn=fake_activation(1))
    with pytest.raises(BadInput, match="unknown precision 'fp8'"):
        plan_document("tiny-gpt2", precisions=["fp8"], activation_fn=fake_activation(1))
    with pytest.raises(BadInput, match="bad batch_size 0"):
        plan_document("tiny-gpt2", batch_size=0, activation_fn=fake_activation(1))


@pytest.fixture(scope="module")
def llama_plan():
    """The real (fake-tensor) step of llama2-7b: exact states; a stand-in activation of 2 GiB per sample."""
    return plan_document("llama2-7b", precisions=["fp32", "bf16"], gpus=["h100-80gb", "h200-141gb"],
                         optimizers=["sgdsai", "adamw"], activation_fn=fake_activation(2 * GiB))


def _row(doc, optimizer, precision, gpu):
    return next(r for r in doc["rows"] if (r["optimizer"], r["precision"], r["gpu"]) == (optimizer, precision, gpu))


def test_llama2_7b_fp32_adamw_needs_two_h100s(llama_plan):
    r = _row(llama_plan, "adamw", "fp32", "h100-80gb")
    assert r["model_state_bytes"] // P7B == 16  # params 4 + grads 4 + exp_avg 4 + exp_avg_sq 4 (+ step scalars)
    assert round(r["model_state_bytes"] / GB, 1) == 107.8
    assert r["fits"] is False
    assert r["max_batch_size"] == 0
    assert r["impl"] == "foreach"  # torch's default for AdamW on CUDA
    assert r["step_transient_bytes"] == 4 * P7B  # foreach sqrt(exp_avg_sq): a full-size copy
    assert r["gpus_needed"]["ddp"] is None
    assert r["gpus_needed"]["zero3"] >= 2
    assert _row(llama_plan, "adamw", "fp32", "h200-141gb")["fits"] is True


def test_llama2_7b_fp32_sgdsai_is_12_bytes_per_param(llama_plan):
    r = _row(llama_plan, "sgdsai", "fp32", "h100-80gb")
    assert r["model_state_bytes"] // P7B == 12
    assert r["model_state_bytes"] - 12 * P7B < 10_000  # one g-SNR scalar per tensor on top
    assert r["state_bytes"] * 2 - _row(llama_plan, "adamw", "fp32", "h100-80gb")["state_bytes"] < 10_000


def test_llama2_7b_bf16_halves_the_states(llama_plan):
    fp32 = _row(llama_plan, "adamw", "fp32", "h100-80gb")["model_state_bytes"]
    bf16 = _row(llama_plan, "adamw", "bf16", "h100-80gb")["model_state_bytes"]
    assert bf16 // P7B == 8 and abs(2 * bf16 - fp32) < 10_000


def test_plan_document_schema(llama_plan):
    assert llama_plan["kind"] == "plan" and llama_plan["schema_version"] == 1
    assert len(llama_plan["rows"]) == 8
    for r in llama_plan["rows"]:
        assert {"optimizer", "precision", "gpu", "gpu_memory_bytes", "model_state_bytes", "activation_bytes",
                "total_bytes", "fits", "max_batch_size", "gpus_needed"} <= set(r)
        assert set(r["gpus_needed"]) == {"ddp", "zero1", "zero2", "zero3"}
        step_peak = r["grad_bytes"] + r["step_transient_bytes"]
        assert r["allocated_peak_bytes"] == (r["param_bytes"] + r["state_bytes"]
                                             + max(r["forward_backward_peak_bytes"], step_peak))
        assert r["reserved_peak_bytes"] is None  # a stand-in activation function: no allocator replay
        gpu = GPUS[r["gpu"]]
        assert (r["context_bytes"], r["context_source"]) == (gpu.context_bytes, gpu.context_source)
        assert r["total_bytes"] == r["allocated_peak_bytes"] + r["context_bytes"]
    header, cells = plan_table_rows(llama_plan)
    assert len(cells) == 8 and header[-1] == "ZeRO-3"
    assert plan_table(llama_plan).row_count == 8


def test_fitting_one_gpu_means_one_for_every_strategy():
    # the conservative ZeRO formula alone would ask for 2 (A on top of all of P + G); the exact fit says 1
    assert gpus_needed(40, 40, 10, 15, 100, 0, fits=True) == {"ddp": 1, "zero1": 1, "zero2": 1, "zero3": 1}
    assert gpus_needed(40, 40, 10, 15, 100, 0, fits=False) == {"ddp": None, "zero1": 2, "zero2": 2, "zero3": 2}


def test_plan_fits_on_the_predicted_reserved_peak():
    """Without stand-ins the planner decides on the allocator model's reserved peak plus the card's context."""
    from sgdsai_cli.analysis.plan import _default_reserved_fn
    from sgdsai_cli.models import resolve_model

    spec = resolve_model("tiny-gpt2")
    reserved = _default_reserved_fn(spec, "fp32", "sgdsai", 64)
    card = GPU("card", "card", reserved(8) + CONTEXT_BYTES + 1, CONTEXT_BYTES)  # batch 8 fits, to the byte
    [r] = plan_rows(spec, ["fp32"], [card], ["sgdsai"], batch_size=2, seq_len=64)
    assert r.reserved_peak_bytes == reserved(2) >= r.allocated_peak_bytes
    assert r.total_bytes == r.reserved_peak_bytes + CONTEXT_BYTES
    assert r.fits and r.context_source == DEFAULT_CONTEXT_SOURCE
    assert reserved(r.max_batch_size) + CONTEXT_BYTES <= card.memory_bytes
    assert reserved(r.max_batch_size + 1) + CONTEXT_BYTES > card.memory_bytes
