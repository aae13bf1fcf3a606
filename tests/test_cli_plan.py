"""`sgdsai plan` end to end on tiny presets (real fake-tensor estimates, fast)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app

runner = CliRunner()


def test_plan_table_and_json(tmp_path):
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["plan", "--model", "tiny-gpt2", "--gpu", "l4-24gb", "--gpu", "custom:1GiB",
                              "--precision", "fp32", "--batch-size", "2", "--seq-len", "64", "--context", "512MiB",
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "sgdsai/" in res.output and "adamw/foreach" in res.output and "l4-24gb" in res.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "plan" and doc["spec"]["batch_size"] == 2 and doc["spec"]["seq_len"] == 64
    assert [(r["optimizer"], r["gpu"]) for r in doc["rows"]] == [
        ("sgdsai", "l4-24gb"), ("sgdsai", "custom:1GiB"), ("adamw", "l4-24gb"), ("adamw", "custom:1GiB")]
    for r in doc["rows"]:
        assert r["fits"] is True
        assert r["model_state_bytes"] == r["param_bytes"] + r["grad_bytes"] + r["state_bytes"]
        assert r["activation_bytes"] > 0 and r["context_bytes"] == 512 * 1024**2
        assert r["max_batch_size"] >= 2
    sgdsai, adamw = doc["rows"][0], doc["rows"][2]
    assert sgdsai["param_bytes"] == 141_056 * 4
    # 8 vs 4 bytes per parameter, plus one 4-byte scalar per tensor each (AdamW's step, SGD-SaI's g-SNR)
    assert sgdsai["state_bytes"] == 141_056 * 4 + 28 * 4
    assert adamw["state_bytes"] == 141_056 * 8 + 28 * 4
    # more memory, larger batch
    assert doc["rows"][0]["max_batch_size"] > doc["rows"][1]["max_batch_size"]


def test_plan_out_writes_plot_and_document(tmp_path):
    res = runner.invoke(app, ["plan", "--model", "tiny-llama", "--gpu", "custom:2GiB", "--gpu", "custom:4GiB",
                              "--seq-len", "32", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["plan-tiny-llama-bf16.png", "plan-tiny-llama-bf16.svg", "plan-tiny-llama-fp32.png",
                     "plan-tiny-llama-fp32.svg", "plan.json"]
    assert (tmp_path / "o" / "plan-tiny-llama-fp32.png").read_bytes()[:4] == b"\x89PNG"


def test_plan_format_json_on_stdout():
    res = runner.invoke(app, ["plan", "--model", "tiny-vit", "--gpu", "custom:2GiB", "--precision", "bf16",
                              "--optimizer", "sgdsai", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(r["optimizer"], r["precision"]) for r in doc["rows"]] == [("sgdsai", "bf16")]
    assert doc["rows"][0]["param_bytes"] == 114_250 * 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "llama2-7"], "unknown model"),
        (["--model", "tiny-gpt2", "--gpu", "h100"], "unknown GPU 'h100'"),
        (["--model", "tiny-gpt2", "--gpu", "custom:lots"], "bad size 'lots'"),
        (["--model", "tiny-gpt2", "--gpu", "custom:512MiB"], "no memory left"),
        (["--model", "tiny-gpt2", "--precision", "fp8"], "unknown precision 'fp8'"),
        (["--model", "tiny-gpt2", "--optimizer", "adam-w"], "unknown optimizer 'adam-w'"),
        (["--model", "tiny-gpt2", "--batch-size", "0"], "bad --batch-size '0'"),
        (["--model", "tiny-gpt2", "--batch-size", "two"], "bad --batch-size 'two'"),
        (["--model", "tiny-gpt2", "--seq-len", "-5"], "bad --seq-len '-5'"),
        (["--model", "tiny-gpt2", "--context", "x"], "bad size 'x'"),
        (["--model", "tiny-gpt2", "--format", "xml"], "unknown format 'xml'"),
        (["--model", "tiny-gpt2", "--json", "/nonexistent/dir/plan.json"], "does not exist"),
    ],
)
def test_plan_bad_input_exits_2(args, needle, tmp_path):
    res = runner.invoke(app, ["plan", *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_plan_out_is_a_file_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["plan", "--model", "tiny-gpt2", "--out", str(f)])
    assert res.exit_code == 2 and "is a file" in res.output
    assert f.read_text() == "x"


@pytest.mark.parametrize(
    ("optimizer", "why"),
    [("torch:LBFGS", "TypeError: LBFGS.step() missing 1 required positional argument: 'closure'"),
     ("torch:SparseAdam", "RuntimeError: SparseAdam does not support dense gradients")],
)
def test_an_optimizer_whose_step_cannot_run_is_exit_2(optimizer, why, tmp_path):
    """profile turns such an optimizer into an error row; a plan has no row for it, so it is one error line."""
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["plan", "--model", "tiny-gpt2", "--seq-len", "64", "-o", "sgdsai", "-o", optimizer,
                              "--json", str(out)])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith(f"error: --optimizer '{optimizer}' cannot be planned: its step() does not "
                                         f"run here ({why}")
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
