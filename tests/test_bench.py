"""bench-step: the core's rows and figures on tiny models, the memory refusal, and the CLI's exit codes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import bench, devices
from sgdsai_cli.measure.bench import BenchResult, BenchSpec, bench_step, param_shapes
from sgdsai_cli.models import build_model, decoder_layers, resolve_model
from sgdsai_cli.progress import Progress

runner = CliRunner()
SPEC = BenchSpec(model="tiny-gpt2", device="cpu",
                 optimizers=("sgdsai", "sgdsai:fused", "sgdsai:foreach", "sgdsai:loop", "adamw-fused", "adamw-foreach"),
                 warmup=1, steps=3)


@pytest.fixture(scope="module")
def tiny_run() -> tuple[BenchResult, list[Progress]]:
    seen: list[Progress] = []
    return bench_step(SPEC, on_progress=seen.append), seen


@pytest.fixture(scope="module")
def tiny_doc(tiny_run):
    return tiny_run[0].to_dict()


def test_bench_step_is_typed_and_reports_progress(tiny_run):
    result, seen = tiny_run
    assert isinstance(result, BenchResult) and result.spec.device == "cpu"
    assert result.row("adamw-fused").ratio_to_adamw_fused == 1.0 and result.row("adamx") is None
    assert result.tensors.params == 141_056 and result.copy.bytes == 141_056 * 4
    assert result.environment.device["type"] == "cpu" and "threads" in result.environment.device
    assert seen[0] == Progress("tiny-gpt2", None, None, "allocating")
    assert [(p.task, p.stage) for p in seen[1:3]] == [("sgdsai", "first step"), ("sgdsai", "ok")]
    assert [(p.completed, p.total, p.stage) for p in seen[-4:]] == [(1, 1, "warmup"), (1, 3, "measured"),
                                                                   (2, 3, "measured"), (3, 3, "measured")]
    assert SPEC.device == "cpu" and SPEC.optimizers[0] == "sgdsai"  # the caller's spec is left alone


def test_bench_document_keeps_the_old_shape():
    events = []
    doc = bench_step(BenchSpec(model="tiny-vit", device="cpu", optimizers=("sgdsai:loop",), warmup=0, steps=1),
                     on_progress=events.append).to_dict()
    events = [f"{p.task}: {p.stage}" + (f" {p.completed}/{p.total}" if p.total else "") for p in events]
    assert list(doc) == ["schema_version", "kind", "tool_version", "created_utc", "environment", "spec", "tensors",
                         "copy", "rows"]
    assert list(doc["spec"]) == ["model", "precision", "device", "layers", "optimizers", "warmup", "steps", "seed",
                                 "threads"]  # threads: added after the first release (additive)
    assert events == ["tiny-vit: allocating", "sgdsai:loop: first step 0/1", "sgdsai:loop: ok 1/1",
                      "tiny-vit: measured 1/1"]


def test_document_is_a_bench_step_envelope(tiny_doc):
    assert tiny_doc["schema_version"] == 1 and tiny_doc["kind"] == "bench-step"
    assert tiny_doc["environment"]["device"]["type"] == "cpu"
    assert tiny_doc["spec"]["model"] == "tiny-gpt2" and tiny_doc["spec"]["steps"] == 3
    n = build_model(resolve_model("tiny-gpt2")).parameters()
    assert tiny_doc["tensors"]["params"] == sum(p.numel() for p in n) == 141_056
    json.dumps(tiny_doc, allow_nan=False)  # plain JSON, no NaN


@pytest.mark.parametrize(
    "optimizer, impl, tensors_moved",
    [
        ("sgdsai", "compiled", 5),
        ("sgdsai:fused", "fused", 5),
        ("sgdsai:foreach", "foreach", 5),
        ("sgdsai:loop", "loop", 5),
        ("adamw-fused", "fused", 7),
        ("adamw-foreach", "foreach", 7),
    ],
)
def test_rows_hold_times_bytes_and_ratios(tiny_doc, optimizer, impl, tensors_moved):
    rows = {r["optimizer"]: r for r in tiny_doc["rows"]}
    row = rows[optimizer]
    if optimizer == "sgdsai" and row["impl"] != "compiled":
        pytest.skip("no C compiler here: auto fell back")
    assert row["status"] == "ok" and row["impl"] == impl
    step = row["step_ms"]
    assert step["n"] == 3 and 0 < step["min"] <= step["p50"] <= step["p90"] <= step["max"]
    assert row["first_step_ms"] > 0
    assert row["bytes_per_step"] == tensors_moved * 141_056 * 4 and row["bytes_source"] == "formula"
    assert row["gb_per_s"] == pytest.approx(row["bytes_per_step"] / (step["p50"] * 1e-3) / 1e9)
    assert row["bandwidth_fraction"] == pytest.approx(row["gb_per_s"] / tiny_doc["copy"]["gb_per_s"])
    assert row["ratio_range"][0] <= row["ratio_to_adamw_fused"] <= row["ratio_range"][1]
    if optimizer == "adamw-fused":
        assert row["ratio_to_adamw_fused"] == 1.0


def test_rows_keep_the_order_asked_for(tiny_doc):
    assert [r["optimizer"] for r in tiny_doc["rows"]] == list(tiny_doc["spec"]["optimizers"])


def test_copy_bandwidth_is_measured(tiny_doc):
    copy = tiny_doc["copy"]
    assert copy["bytes"] == 141_056 * 4 and copy["ms"]["n"] == 3
    assert copy["gb_per_s"] == pytest.approx(2 * copy["bytes"] / (copy["ms"]["p50"] * 1e-3) / 1e9)


def test_no_reference_means_no_ratio():
    doc = bench_step(BenchSpec(model="tiny-llama", device="cpu", optimizers=("sgdsai:loop",), warmup=0,
                               steps=1)).to_dict()
    assert doc["rows"][0]["ratio_to_adamw_fused"] is None and doc["rows"][0]["step_ms"]["n"] == 1


@pytest.mark.parametrize("model, layers", [("tiny-llama", 1), ("tiny-llama", 2), ("tiny-gpt2", 1), ("tiny-vit", 2)])
def test_layers_keeps_only_decoder_layer_tensors(model, layers):
    spec = resolve_model(model)
    blocks = decoder_layers(build_model(spec))
    expected = [tuple(p.shape) for i in range(layers) for p in blocks[i].parameters()]
    assert [s for _, s in param_shapes(spec, layers)] == expected


def test_llama2_7b_layer_shapes():
    shapes = param_shapes(resolve_model("llama2-7b"), 1)
    n = sum(torch.Size(s).numel() for _, s in shapes)
    assert n == 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # attention, MLP, two norms


def test_too_big_for_memory_refuses_with_a_layers_hint(monkeypatch):
    monkeypatch.setattr(devices, "free_bytes", lambda dev: 16 * 2**30)
    spec = BenchSpec(model="llama2-7b", device="cpu")
    with pytest.raises(EnvironmentUnavailable, match=r"^model 'llama2-7b' \(all 32 blocks, fp32\) needs .* GiB .* "
                                                     r"16\.0 GiB free; try layers \d+$") as e:
        bench_step(spec)
    assert e.value.field == "layers" and e.value.value >= 1


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"warmup": -1}, "warmup", "bad warmup -1 (must be 0 or more)"),
        ({"steps": 0}, "steps", "bad steps 0 (must be 1 or more)"),
        ({"steps": 99999999999999999999}, "steps", "bad steps 99999999999999999999 (must be at most 100000)"),
        ({"steps": 100_001}, "steps", "bad steps 100001 (must be at most 100000)"),
        ({"warmup": 10**30}, "warmup", f"bad warmup {10**30} (must be at most 100000)"),
        ({"steps": 2.0}, "steps", "bad steps 2.0 (must be 1 or more)"),
        ({"layers": 7}, "layers", "bad layers 7 (model 'tiny-gpt2' has 2 layers: 1..2)"),
        ({"precision": "amp-bf16"}, "precision", "precision amp-bf16: a step has no autocast"),
        ({"device": "meta"}, "device", "device meta cannot time a step"),
        ({"optimizers": ("sgdsai:triton",)}, None, "unknown optimizer 'sgdsai:triton'"),
    ],
)
def test_bad_requests_name_the_field_not_a_flag(change, field, message):
    import dataclasses

    with pytest.raises(BadInput) as e:
        bench_step(dataclasses.replace(BenchSpec(model="tiny-gpt2", device="cpu"), **change))
    assert str(e.value).startswith(message) and e.value.field == field
    assert "--" not in str(e.value)
    if field in ("steps", "warmup"):
        assert e.value.value == change[field]


def test_cli_unbounded_steps_exit_2_at_once():
    result = _cli("--model", "tiny-gpt2", "--device", "cpu", "--steps", "99999999999999999999")
    assert result.exit_code == 2, result.output
    assert "bad --steps 99999999999999999999 (must be at most 100000)" in result.output


# ---------------------------------------------------------------------------------------------
# timing honesty: threads and a warning when the spread is wide (synthetic times, no clock)


@pytest.mark.parametrize(
    "steps_ms, ratios, threads, found",
    [
        ([1.0, 1.0, 1.1, 1.0, 1.2], [0.7, 0.69, 0.71], 1, None),  # steady
        ([1.0, 1.0, 1.0, 1.0, 3.0], [], 2, "step p90/p50 2.20"),
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.07, 0.21, 0.92], 2, "ratio range 0.07-0.92 over 3 rounds"),  # the issue's
        ([1.0, 2.0, 1.0, 1.0, 3.0], [0.2, 0.9], 4, "step p90/p50 2.60, ratio range 0.20-0.90 over 2 rounds"),
        ([1.0, 1.5], [0.5, 0.75], 2, None),  # exactly at the limit is not above it
        ([5.0], [0.1], 2, None),  # one round: nothing to compare
        ([0.0, 0.0, 1.0], [0.0, 1.0], 2, None),  # a zero median or minimum cannot be judged
    ],
)
def test_spread_warning(steps_ms, ratios, threads, found):
    from sgdsai_cli.measure import stats

    warning = stats.spread_warning(steps_ms, ratios, threads)
    if found is None:
        assert warning is None
    else:
        assert warning.startswith(f"timings vary widely ({found}, above 1.5) on {threads} thread")
        assert warning.endswith("for a stable figure run on a quiet machine with OMP_NUM_THREADS=1")


@pytest.mark.parametrize(
    "own, ref, device, warned",
    [
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "cpu", False),
        ([0.2, 0.2, 0.2], [1.0, 0.3, 2.0], "cpu", True),  # steady steps, the reference noisy: ratios 0.1-0.67
        ([1.0, 1.0, 4.0], None, "cpu", True),  # no reference: the step spread alone
        ([1.0, 1.0, 4.0], None, "meta", False),  # threads and the warning are CPU figures
    ],
)
def test_rows_record_threads_and_a_spread_warning(own, ref, device, warned, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    times = {"sgdsai:loop": own, **({bench.REFERENCE: ref} if ref is not None else {})}
    row = bench._row("sgdsai:loop", object(), "loop", times, 1.0, 1000, 4, 10.0, torch.device(device))
    assert row.details.get("threads") == (2 if device == "cpu" else None)
    assert ("spread_warning" in row.details) == warned
    if warned:
        assert "OMP_NUM_THREADS=1" in row.details["spread_warning"]
    if ref is not None:
        ref_row = bench._row(bench.REFERENCE, object(), "fused", times, 1.0, 1000, 4, 10.0, torch.device(device))
        assert ref_row.ratio_range == [1.0, 1.0]  # its own ratios are all 1: only its step spread counts


def test_tiny_run_rows_record_threads(tiny_doc):
    assert all(r["details"]["threads"] == tiny_doc["environment"]["device"]["threads"] for r in tiny_doc["rows"])


def test_bytes_needed_counts_every_state():
    # params + grads + sgdsai (1) + adamw-fused (2) + adamw-foreach (2) + the copy probe (2 x 1 GiB max)
    assert bench.bytes_needed(1000, 4, bench.DEFAULT_OPTIMIZERS) == 4000 * 7 + 2 * 4000


def _cli(*args):
    return runner.invoke(app, ["bench-step", *args])


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "gtp2"], 2, "unknown model 'gtp2'"),
        (["--model", "tiny-gpt2", "--optimizer", "adamw-fusd"], 2, "did you mean adamw-fused"),
        (["--model", "tiny-gpt2", "--optimizer", "sgdsai:triton"], 2, "unknown optimizer 'sgdsai:triton'"),
        (["--model", "tiny-gpt2", "--precision", "fp8"], 2, "unknown precision 'fp8'"),
        (["--model", "tiny-gpt2", "--precision", "amp-bf16"], 2, "no autocast"),
        (["--model", "tiny-gpt2", "--layers", "0"], 2, "bad --layers '0'"),
        (["--model", "tiny-gpt2", "--layers", "7"], 2, "bad --layers 7 (model 'tiny-gpt2' has 2 layers"),
        (["--model", "tiny-gpt2", "--steps", "0"], 2, "bad --steps '0'"),
        (["--model", "tiny-gpt2", "--warmup", "x"], 2, "bad --warmup 'x'"),
        (["--model", "tiny-gpt2", "--device", "meta"], 2, "--device meta cannot time a step"),
        (["--model", "tiny-gpt2", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["--model", "tiny-gpt2", "--format", "csv"], 2, "unknown format 'csv'"),
        (["--model", "tiny-gpt2", "--json", "/nonexistent/dir/x.json"], 2, "does not exist"),
    ],
)
def test_cli_bad_input(args, code, message):
    result = _cli(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_cuda_exits_3():
    result = _cli("--model", "tiny-gpt2", "--device", "cuda")
    assert result.exit_code == 3 and "CUDA is not available" in result.output


def test_cli_too_big_exits_3(monkeypatch):
    monkeypatch.setattr(devices, "free_bytes", lambda dev: 8 * 2**30)
    result = _cli("--model", "llama2-7b", "--device", "cpu")
    assert result.exit_code == 3 and "try --layers" in result.output


def test_cli_table_and_json_file(tmp_path):
    out = tmp_path / "b.json"
    result = _cli("--model", "tiny-llama", "--device", "cpu", "--warmup", "0", "--steps", "2",
                  "-o", "sgdsai:loop", "-o", "adamw-fused", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "tiny-llama shapes" in result.output and "sgdsai:loop" in result.output
    assert "copy bandwidth:" in result.output and f"wrote {out}" in result.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "bench-step" and [r["optimizer"] for r in doc["rows"]] == ["sgdsai:loop", "adamw-fused"]


def test_cli_format_json_prints_the_document():
    result = _cli("--model", "tiny-vit", "--device", "cpu", "--warmup", "0", "--steps", "1", "--format", "json",
                  "-o", "sgdsai:foreach")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["rows"][0]["impl"] == "foreach" and doc["rows"][0]["bytes_per_step"] == 5 * 114_250 * 4
