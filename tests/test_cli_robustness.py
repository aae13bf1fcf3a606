"""Adversarial input on every command: one `error: ...` line naming the value, the documented exit code
(2 bad input, 3 environment, 1 regression), never a traceback."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
PROFILE = json.loads((ROOT / "profiles" / "baselines" / "tiny-gpt2-fp32.json").read_text())


def invoke(args: list[str]):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def mutated(change) -> dict:
    doc = copy.deepcopy(PROFILE)
    change(doc)
    return doc


def _set(path: str, value):
    """A mutation setting doc[a][b]... (integers index lists) to value."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(doc):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


# (mutation, needle in the error line)
BAD_PROFILES = [
    (_set("environment", "x"), "'environment' must be an object"),
    (_set("environment.device", "cpu"), "environment.device must be an object"),
    (_set("environment.device", {"type": "cpu", "total_memory_bytes": "big"}),
     "environment.device.total_memory_bytes must be a non-negative integer or null, not 'big'"),
    (_set("spec", [1]), "'spec' must be an object"),
    (_set("model.params", "many"), "model.params must be a non-negative integer"),
    (_set("runs.0.impl", ["x"]), "runs[0].impl must be a string or null"),
    (_set("runs.0.optimizer", 5), "runs[0].optimizer must be a string"),
    (_set("runs.0.memory.state_bytes", "564336"), "runs[0].memory.state_bytes must be a non-negative integer"),
    (_set("runs.0.memory.state_bytes", -5), "runs[0].memory.state_bytes must be a non-negative integer"),
    (_set("runs.0.memory.state_bytes", 1.5), "not 1.5"),
    (_set("runs.0.memory.state_bytes", True), "not True"),
    (_set("runs.0.memory.state_bytes", float("nan")), "not nan"),
    (_set("runs.0.memory.state_bytes", float("inf")), "not inf"),
    (_set("runs.0.memory.state_bytes", 10**400), "runs[0].memory.state_bytes must be"),
    (_set("runs.0.memory.state_bytes_by_key", [1]), "state_bytes_by_key must be an object"),
    (_set("runs.0.memory.state_bytes_by_key", {"x": "y"}), "state_bytes_by_key.x must be"),
    (_set("runs.0.memory.details", "x"), "runs[0].memory.details must be an object"),
    (_set("runs.0.latency_ms", "fast"), "runs[0].latency_ms must be an object or null"),
    (_set("runs.0.latency_ms", {"optimizer_step": 5}), "latency_ms.optimizer_step must be an object"),
    (_set("runs.0.latency_ms", {"optimizer_step": {"p50": "x"}}), "latency_ms.optimizer_step.p50 must be"),
]


def _nan_json(doc: dict) -> str:
    return json.dumps(doc)  # json.dumps writes NaN / Infinity, which json.loads reads back


@pytest.mark.parametrize(("change", "needle"), BAD_PROFILES)
def test_check_and_report_reject_malformed_profile(tmp_path, change, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(_nan_json(mutated(change)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(PROFILE))
    for args in (["check", bad, "--baseline", good], ["check", good, "--baseline", bad],
                 ["report", bad, "--out", tmp_path / "r"]):
        res = invoke(args)
        assert res.exit_code == 2, (args, res.output)
        assert f"error: {bad}: " in res.output and needle in res.output, res.output
    assert not (tmp_path / "r" / "report.md").exists()


def test_huge_value_is_shortened_in_the_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mutated(_set("runs.0.memory.state_bytes", 10**400))))
    res = invoke(["check", bad, "--baseline", bad])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()[-1]) < 200


@pytest.mark.parametrize("kind", ["gsnr", "plan", "bench-step"])
@pytest.mark.parametrize(("key", "value", "needle"), [
    ("environment", "x", "'environment' must be an object"),
    ("spec", 5, "'spec' must be an object"),
    ("model", [1], "'model' must be an object"),
    ("model", {"params": "many"}, "model.params must be a non-negative integer"),
])
def test_report_rejects_malformed_envelope_of_any_kind(tmp_path, kind, key, value, needle):
    doc = {"schema_version": 1, "kind": kind, "environment": {"device": {"type": "cpu"}}, "spec": {},
           "model": {"name": "m"}, key: value}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    res = invoke(["report", bad, "--out", tmp_path / "r"])
    assert res.exit_code == 2, res.output
    assert needle in res.output


# --------------------------------------------------------------------------------------------------
# config.json, TOML and numbers too large or too deep for torch / the JSON and TOML parsers

GPT2 = {"model_type": "gpt2", "vocab_size": 512, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4}
LLAMA = {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 256}
VIT = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 2,
       "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 10}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("config", "needle"), [
    (DEEP, "not valid JSON (nested too deeply)"),
    ('{"model_type": "gpt2", "n_embd": ' + "9" * 5000 + "}", "not valid JSON (an integer of more than 4300 digits)"),
    ({**GPT2, "vocab_size": 10**30}, "is too large to build: a tensor's size overflows 64 bits"),
    ({**GPT2, "n_positions": 10**20}, "is too large to build"),
    ({**LLAMA, "intermediate_size": 10**19}, "is too large to build"),
    ({**LLAMA, "head_dim": {"a": 1}}, "field 'head_dim' must be a positive integer"),
    ({**LLAMA, "attention_bias": "true"}, "field 'attention_bias' must be true or false"),
    ({**VIT, "qkv_bias": "no"}, "field 'qkv_bias' must be true or false"),
    ({**VIT, "image_size": 2**40, "patch_size": 2**20}, "is too large (more than 2**63 bytes)"),
])
@pytest.mark.parametrize("command", [["profile", "--device", "meta", "-q"], ["plan"]])
def test_bad_config_json(tmp_path, config, needle, command):
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    res = invoke([command[0], "--model", path, *command[1:]])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and needle in res.output


@pytest.mark.parametrize(("args", "needle"), [
    (["profile", "-m", "tiny-gpt2", "--batch-size", "99999999999999999999", "-q"],
     "a batch of 99999999999999999999 x 128 tokens is too large"),
    (["profile", "-m", "tiny-llama", "--seq-len", "99999999999999999999", "-q"], "tokens is too large"),
    (["plan", "-m", "tiny-gpt2", "--seq-len", "128", "--batch-size", "99999999999999999999"], "tokens is too large"),
    (["plan", "-m", "tiny-vit", "--batch-size", "99999999999999999999"],
     "a batch of 99999999999999999999 images of 3 x 32 x 32 is too large"),
])
def test_numbers_beyond_int64(args, needle):
    res = invoke(args)
    assert res.exit_code == 2, res.output
    assert needle in res.output


@pytest.mark.parametrize(("text", "needle"), [
    ("a = " + DEEP.replace("][", "],[") + "\n", "not valid TOML (nested too deeply)"),
    ('model = "tiny-gpt2"\nbatch_size = 99999999999999999999\n', "tokens is too large"),
    ('model = "tiny-gpt2"\nbatch_size = ' + "9" * 5000 + "\n", "not valid TOML (an integer of more than 4300 digits)"),
])
def test_bad_profile_toml(tmp_path, text, needle):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    res = invoke(["profile", "--profile", path, "-q"])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_result_json_nested_too_deeply(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    res = invoke(["check", path, "--baseline", path])
    assert res.exit_code == 2
    assert "not valid JSON (nested too deeply)" in res.output


def test_result_json_with_an_integer_past_the_digit_limit(tmp_path):
    path = tmp_path / "big.json"
    path.write_text('{"schema_version": 1, "kind": "profile", "runs": [], "spec": {"batch_size": ' + "9" * 5000 + "}}")
    res = invoke(["check", path, "--baseline", path])
    assert res.exit_code == 2 and "not valid JSON (an integer of more than 4300 digits)" in res.output


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("precision", None, "rows[0].precision must be a string, not None"),
    ("gpu", 3, "rows[0].gpu must be a string, not 3"),
    ("total_bytes", -1, "rows[0].total_bytes must be a non-negative integer or null"),
    ("fits", "yes", "rows[0].fits must be true or false"),
    ("max_batch_size", 1.5, "rows[0].max_batch_size must be a non-negative integer or null"),
    ("impl", ["foreach"], "rows[0].impl must be a string or null"),
    ("gpus_needed", {"ddp": "one"}, "rows[0].gpus_needed must hold non-negative integers or null"),
])
def test_report_checks_every_plan_row_before_writing(tmp_path, field, value, needle):
    from sgdsai_cli import plan

    doc = plan("tiny-gpt2", precisions=["fp32"], gpus=["l4-24gb"], optimizers=["sgdsai"], seq_len=32).to_dict()
    doc["rows"][0][field] = value
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps(doc))
    res = invoke(["report", bad, "--out", tmp_path / "r"])
    assert res.exit_code == 2, res.output
    assert needle in res.output and not (tmp_path / "r").exists()


def test_bench_step_optimizer_that_needs_a_closure_is_an_error_row():
    res = invoke(["bench-step", "-m", "tiny-gpt2", "--device", "cpu", "-o", "torch:LBFGS", "-o", "sgdsai",
                  "--steps", "1", "--warmup", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["optimizer"]: r for r in json.loads(res.stdout)["rows"]}
    assert rows["torch:LBFGS"]["status"] == "error" and "closure" in rows["torch:LBFGS"]["error"]
    assert rows["sgdsai"]["status"] == "ok"


# --------------------------------------------------------------------------------------------------
# gsnr

GSNR = ["gsnr", "-m", "tiny-gpt2", "--device", "cpu", "--steps", "0,1"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--seed", "99999999999999999999"], "bad --seed 99999999999999999999"),
    (["--batch-size", "99999999999999999999"], "a batch of 99999999999999999999 x 128 tokens is too large"),
    (["--optimizer", "torch:LBFGS"], "--optimizer torch:LBFGS cannot train 'tiny-gpt2' here (TypeError"),
    (["--optimizer", "torch:SparseAdam"], "--optimizer torch:SparseAdam cannot train 'tiny-gpt2' here"),
])
def test_gsnr_bad_input(extra, needle):
    res = invoke([*GSNR, *extra])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_gsnr_json_named_csv_would_be_overwritten_by_its_csv(tmp_path):
    path = tmp_path / "out.csv"
    res = invoke([*GSNR, "--json", path])
    assert res.exit_code == 2, res.output
    assert "the per-tensor CSV would overwrite it" in res.output
    assert not path.exists()


def test_gsnr_csv_beside_json_unwritable_fails_before_any_work(tmp_path):
    (tmp_path / "g.csv").mkdir()
    res = invoke([*GSNR, "--json", tmp_path / "g.json"])
    assert res.exit_code == 2, res.output
    assert "it is a directory" in res.output
    assert not (tmp_path / "g.json").exists()


def test_config_with_absurd_depth_is_refused_before_building(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GPT2, "n_layer": 100_000}))
    res = invoke(["profile", "--model", path, "--device", "meta", "-q"])
    assert res.exit_code == 2, res.output
    assert "field 'n_layer' must be at most 1,024, got 100,000" in res.output


def test_plan_out_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = invoke(["plan", "-m", "tiny-gpt2", "--seq-len", "128", "--out", tmp_path / "afile" / "sub"])
    assert res.exit_code == 2, res.output
    assert "cannot create folder" in res.output and "Not a directory" in res.output


@pytest.mark.parametrize("size", ["1e-9", "0.4", "0.0001KiB"])
def test_size_rounding_to_zero_bytes_is_refused(tmp_path, size):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROFILE))
    res = invoke(["check", path, "--baseline", path, "--budget", f"state={size}"])
    assert res.exit_code == 2, res.output
    assert f"bad size '{size}' (must be at least 1 byte)" in res.output
