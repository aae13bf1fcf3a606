"""Exact sizing on the meta device: the paper's llama2-7b figures, precisions, tied weights, every optimizer."""

from __future__ import annotations

import re

import pytest
import torch

from sgdsai_cli.files import write_json_atomic
from sgdsai_cli.measure import sizing
from sgdsai_cli.measure.storage import state_bytes_by_key, unique_bytes
from sgdsai_cli.models import resolve_model
from sgdsai_cli.progress import Progress
from sgdsai_cli.results import ProfileResult, ProfileSpec
from sgdsai_cli.schema import load_document

LLAMA7B_PARAMS = 6_738_415_616
LLAMA7B_TENSORS = 291
FP32_BUFFER = 26_953_662_464  # one fp32 buffer per parameter: 6,738,415,616 x 4 bytes
SCALARS = LLAMA7B_TENSORS * 4  # one fp32 scalar per tensor: 1164 bytes


def _runs(model: str, precision: str, optimizers: list[str], estimate: bool = False, **spec_kw) -> dict:
    spec = ProfileSpec(model=model, precision=precision, **spec_kw)
    result = sizing.size_profile(spec, resolve_model(model), optimizers, estimate=estimate)
    assert isinstance(result, ProfileResult)
    return result.to_dict()


@pytest.fixture(scope="module")
def llama_docs() -> dict[str, dict]:
    """llama2-7b sized on meta in three precisions (a few seconds each, no estimate)."""
    return {p: _runs("llama2-7b", p, ["sgdsai", "adamw"]) for p in ("fp32", "bf16", "amp-bf16")}


@pytest.mark.parametrize(
    "precision, buffer",
    [("fp32", FP32_BUFFER), ("bf16", FP32_BUFFER // 2), ("amp-bf16", FP32_BUFFER)],
)
def test_llama2_7b_state_bytes_are_exact(llama_docs, precision, buffer):
    doc = llama_docs[precision]
    model = dict(doc["model"])
    assert re.fullmatch(r"[0-9a-f]{16}", model.pop("fingerprint"))
    assert model == {"name": "llama2-7b", "family": "llama", "params": LLAMA7B_PARAMS,
                            "param_tensors": LLAMA7B_TENSORS, "param_bytes": buffer, "grad_bytes": buffer,
                            "trainable_params": LLAMA7B_PARAMS}
    sgdsai, adamw = doc["runs"]
    assert sgdsai["status"] == adamw["status"] == "ok"
    # SGD-SaI: one momentum buffer in the parameter dtype + one fp32 g-SNR scalar per tensor
    assert sgdsai["memory"]["state_bytes_by_key"] == {"momentum_buffer": buffer, "gsnr": SCALARS}
    assert sgdsai["memory"]["state_bytes"] == buffer + SCALARS
    # AdamW: two moments + its fp32 step scalars
    assert adamw["memory"]["state_bytes_by_key"] == {"exp_avg": buffer, "exp_avg_sq": buffer, "step": SCALARS}
    assert adamw["memory"]["state_bytes"] == 2 * buffer + SCALARS
    # the headline saving: exactly one parameter-sized buffer
    assert adamw["memory"]["state_bytes"] - sgdsai["memory"]["state_bytes"] == buffer
    for run in doc["runs"]:
        m = run["memory"]
        assert m["source"] == "meta" and m["param_bytes"] == m["grad_bytes"] == buffer
        assert m["activation_peak_bytes"] is None and m["estimated_peak_bytes"] is None


def test_llama2_7b_fp32_state_is_25_10_gib(llama_docs):
    sgdsai = llama_docs["fp32"]["runs"][0]["memory"]["state_bytes"]
    assert sgdsai == 26_953_663_628
    assert f"{sgdsai / 1024**3:.2f}" == "25.10"  # the paper measures 25.09 GiB on an A100


def test_tied_gpt2_head_counts_once():
    doc = _runs("gpt2", "fp32", ["sgdsai", "adamw"])
    params = 124_439_808  # wte counted once: lm_head is the same Parameter
    assert doc["model"]["params"] == params
    assert doc["model"]["param_tensors"] == 148
    assert doc["model"]["param_bytes"] == 4 * params
    sgdsai, adamw = doc["runs"]
    assert sgdsai["memory"]["state_bytes_by_key"]["momentum_buffer"] == 4 * params
    assert adamw["memory"]["state_bytes_by_key"]["exp_avg"] == 4 * params


ALL_OPTIMIZERS = ["sgdsai", "sgdsai-ref", "adamw", "adamw-foreach", "adamw-fused", "adamw-loop", "sgd",
                  "adafactor", "torch:Adam", "torch:RMSprop"]


@pytest.fixture(scope="module")
def tiny_doc() -> dict:
    return _runs("tiny-llama", "fp32", ALL_OPTIMIZERS + ["torch:LBFGS"])


@pytest.mark.parametrize(
    "optimizer, impl, keys, per_param_buffers",
    [
        ("sgdsai", "foreach", {"momentum_buffer", "gsnr"}, 1),
        ("sgdsai-ref", "loop", {"momentum_buffer", "gsnr"}, 1),
        ("adamw", "foreach", {"exp_avg", "exp_avg_sq", "step"}, 2),
        ("adamw-foreach", "foreach", {"exp_avg", "exp_avg_sq", "step"}, 2),
        ("adamw-fused", "fused", {"exp_avg", "exp_avg_sq", "step"}, 2),
        ("adamw-loop", "loop", {"exp_avg", "exp_avg_sq", "step"}, 2),
        ("sgd", "foreach", {"momentum_buffer"}, 1),
        ("torch:Adam", "foreach", {"exp_avg", "exp_avg_sq", "step"}, 2),
        ("torch:RMSprop", "foreach", {"square_avg", "step"}, 1),
    ],
)
def test_every_optimizer_name_is_sized(tiny_doc, optimizer, impl, keys, per_param_buffers):
    run = next(r for r in tiny_doc["runs"] if r["optimizer"] == optimizer)
    assert run["status"] == "ok", run["error"]
    assert run["impl"] == impl
    by_key = run["memory"]["state_bytes_by_key"]
    assert set(by_key) == keys
    buffers = sum(b for k, b in by_key.items() if k not in ("step", "gsnr"))
    assert buffers == per_param_buffers * tiny_doc["model"]["param_bytes"]
    assert run["memory"]["state_bytes"] == sum(by_key.values())


def test_fused_adamw_says_how_it_was_sized(tiny_doc):
    run = next(r for r in tiny_doc["runs"] if r["optimizer"] == "adamw-fused")
    assert run["note"] == sizing.FUSED_NOTE


def test_adafactor_state_is_factored(tiny_doc):
    run = next(r for r in tiny_doc["runs"] if r["optimizer"] == "adafactor")
    assert run["status"] == "ok"
    by_key = run["memory"]["state_bytes_by_key"]
    assert {"row_var", "col_var", "variance", "step"} == set(by_key)
    assert run["memory"]["state_bytes"] < tiny_doc["model"]["param_bytes"] // 4  # far below one buffer
    assert "scalar reads" in run["note"]  # Tensor.item() on meta answered with 1, and said so


def test_optimizer_that_cannot_step_is_an_error_row(tiny_doc):
    run = next(r for r in tiny_doc["runs"] if r["optimizer"] == "torch:LBFGS")
    assert run["status"] == "error" and run["memory"] is None
    assert "closure" in run["error"]
    assert all(r["status"] == "ok" for r in tiny_doc["runs"] if r["optimizer"] != "torch:LBFGS")


def test_state_bytes_by_key_counts_shared_storage_once():
    p1 = torch.nn.Parameter(torch.zeros(10))
    p2 = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.SGD([p1, p2], lr=0.1, momentum=0.9)
    shared = torch.zeros(10)
    opt.state[p1]["momentum_buffer"] = shared
    opt.state[p2]["momentum_buffer"] = shared[:5]  # a view of the same storage
    opt.state[p2]["other"] = torch.zeros(3, dtype=torch.float64)
    assert state_bytes_by_key(opt) == {"momentum_buffer": 40, "other": 24}


def test_unique_bytes_counts_views_and_meta_storages_once():
    a = torch.zeros(10)
    meta1, meta2 = torch.empty(4, device="meta"), torch.empty(8, device="meta")  # both data_ptr() == 0
    assert meta1.data_ptr() == meta2.data_ptr() == 0
    assert unique_bytes([a, a[:5], a.view(2, 5)]) == 40
    assert unique_bytes([meta1, meta2, meta1[1:]]) == 48


def test_size_profile_reports_progress_per_optimizer():
    seen: list[Progress] = []
    spec = ProfileSpec(model="tiny-gpt2", batch_size=1, seq_len=16)
    sizing.size_profile(spec, resolve_model("tiny-gpt2"), ["sgdsai", "torch:LBFGS"], on_progress=seen.append)
    assert [(p.task, p.stage) for p in seen] == [("sgdsai", "sizing"), ("torch:LBFGS", "sizing"),
                                                 ("torch:LBFGS", "error"), ("sgdsai", "estimate"), ("sgdsai", "ok")]
    assert seen[-1].completed == seen[-1].total == 2


def test_size_profile_document_round_trips(tmp_path):
    doc = _runs("tiny-vit", "amp-fp16", ["sgdsai", "adamw"], estimate=True, batch_size=2, seq_len=16)
    assert doc["kind"] == "profile" and doc["spec"]["precision"] == "amp-fp16"
    assert doc["environment"]["device"]["type"] == "meta"
    for run in doc["runs"]:
        m = run["memory"]
        assert m["source"] == "fake"
        assert m["activation_peak_bytes"] > 0 and m["step_transient_bytes"] >= 0
        assert m["estimated_peak_bytes"] >= m["param_bytes"] + m["grad_bytes"] + m["state_bytes"]
    path = write_json_atomic(tmp_path / "r.json", doc)
    assert load_document(path, kinds=("profile",))["runs"][0]["memory"]["state_bytes"] == \
        doc["runs"][0]["memory"]["state_bytes"]
    assert set(doc["timing_s"]) == {"sizing", "estimate", "total"}


def test_the_estimate_sizes_state_from_its_own_fake_step(tiny_doc):
    """With the estimate the state comes from the fake-tensor step (no second, meta step): the same bytes per key."""
    traced = _runs("tiny-llama", "fp32", ALL_OPTIMIZERS + ["torch:LBFGS"], estimate=True)
    for meta_run, run in zip(tiny_doc["runs"], traced["runs"]):
        assert (run["optimizer"], run["status"]) == (meta_run["optimizer"], meta_run["status"])
        if run["status"] == "ok":
            assert run["memory"]["state_bytes_by_key"] == meta_run["memory"]["state_bytes_by_key"], run["optimizer"]
            assert run["memory"]["source"] == "fake"
    by_name = {r["optimizer"]: r for r in traced["runs"]}
    assert by_name["adamw-fused"]["note"] is None and by_name["adamw-fused"]["impl"] == "fused"
    assert by_name["adamw"]["note"] is None  # its step counters' reads are not "invented values"
    assert "scalar reads" in by_name["adafactor"]["note"]
    assert "closure" in by_name["torch:LBFGS"]["error"]
