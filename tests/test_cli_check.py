"""`sgdsai check` end to end: every exit code (0 pass, 1 regression, 2 bad input) with its message."""

from __future__ import annotations

import copy
import json

import pytest
from test_check import BASE, P, doc, run, scaled  # the same synthetic llama2-7b documents
from typer.testing import CliRunner

from sgdsai_cli.cli import app

runner = CliRunner()


def write(path, document):
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


@pytest.fixture
def files(tmp_path):
    def make(current, baseline=BASE):
        return write(tmp_path / "result.json", current), write(tmp_path / "base.json", baseline)

    return make


@pytest.mark.parametrize(
    ("current", "baseline", "extra", "code", "needle"),
    [
        (BASE, BASE, [], 0, "PASS"),
        (scaled(BASE, "adamw", "state_bytes", 1.005), BASE, [], 0, "PASS"),
        (BASE, scaled(BASE, "sgdsai", "state_bytes", 0.95), [], 1, "state_bytes of sgdsai/loop"),
        (BASE, scaled(BASE, "sgdsai", "state_bytes", 0.95), ["--tolerance", "6%"], 0, "PASS"),
        (scaled(BASE, "adamw", "grad_bytes", 1.5), BASE, ["--tolerance", "0"], 1, "grad_bytes of adamw/loop"),
        (BASE, BASE, ["--budget", "state=100GiB"], 0, "PASS"),
        (BASE, BASE, ["--budget", "state=30GiB"], 1, "budget state of adamw/loop"),
    ],
)
def test_check_exit_codes(files, current, baseline, extra, code, needle):
    result_path, base_path = files(current, baseline)
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path, *extra])
    assert res.exit_code == code, res.output
    assert needle in res.output
    if code == 1:
        assert "error: FAIL" in res.output


def test_check_json_format(files):
    result_path, base_path = files(BASE, scaled(BASE, "sgdsai", "state_bytes", 0.95))
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path, "--format", "json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["passed"] is False
    assert [(r["run"], r["metric"]) for r in data["rows"] if r["failed"]] == [("sgdsai/loop", "state_bytes")]


def _wrong_kind():
    d = copy.deepcopy(BASE)
    d["kind"] = "plan"
    return d


def _wrong_version():
    d = copy.deepcopy(BASE)
    d["schema_version"] = 2
    return d


@pytest.mark.parametrize(
    ("current", "extra", "needle"),
    [
        ("{not json", [], "not valid JSON"),
        ("[1, 2]", [], "not a sgdsai result"),
        (_wrong_kind(), [], "kind 'plan'"),
        (_wrong_version(), [], "unsupported schema_version 2"),
        (doc([run("sgdsai")], model="gpt2"), [], "nothing to compare"),
        (BASE, ["--tolerance", "abc"], "bad percentage 'abc'"),
        (BASE, ["--tolerance", "-1%"], "bad percentage '-1%'"),
        (BASE, ["--tolerance-latency", "x"], "bad percentage 'x'"),
        (BASE, ["--budget", "stat=1GiB"], "did you mean state"),
        (BASE, ["--budget", "state"], "use KEY=SIZE"),
        (BASE, ["--budget", "state=12parsecs"], "bad size '12parsecs'"),
        (BASE, ["--budget", "peak_allocated=1GiB"], "no run in the result has a peak_allocated figure"),
        (BASE, ["--format", "yaml"], "unknown format 'yaml'"),
    ],
)
def test_check_bad_input_exits_2(files, current, extra, needle):
    result_path, base_path = files(current)
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path, *extra])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_check_missing_files_exit_2(tmp_path):
    base = write(tmp_path / "base.json", BASE)
    res = runner.invoke(app, ["check", str(tmp_path / "nope.json"), "--baseline", base])
    assert res.exit_code == 2 and "nope.json: no such file" in res.output
    res = runner.invoke(app, ["check", base, "--baseline", str(tmp_path / "gone.json")])
    assert res.exit_code == 2 and "gone.json: no such file" in res.output


def test_check_without_baseline_is_a_usage_error(tmp_path):
    res = runner.invoke(app, ["check", write(tmp_path / "r.json", BASE)])
    assert res.exit_code == 2
    assert "--baseline" in res.output


def test_check_reports_improvement_without_failing(files):
    result_path, base_path = files(scaled(BASE, "adamw", "state_bytes", 0.5))
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path])
    assert res.exit_code == 0
    assert "improved" in res.output and "-50.00%" in res.output


def _with(**changes):
    """BASE with top-level or dotted fields changed: _with(**{"spec.batch_size": True})."""
    d = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        obj = d
        for part in path:
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        obj[int(last) if isinstance(obj, list) else last] = value
    return d


def _nulls(optimizer):
    return run(optimizer, state=None, state_bytes_by_key={}, param_bytes=None, grad_bytes=None)


TWO_SGDSAI = doc([run("sgdsai", state=4 * P + 1164), run("sgdsai", state=40 * P), run("adamw", state=8 * P + 2328)])


@pytest.mark.parametrize(
    ("current", "baseline", "extra", "error"),
    [
        # nothing compared is never a pass
        (doc([_nulls("sgdsai"), _nulls("adamw")]), BASE, [],
         "nothing to compare: the matched runs (sgdsai/loop (llama2-7b fp32 meta), adamw/loop (llama2-7b fp32 meta)) "
         "have no memory or latency figure that is non-null in both the result and the baseline, "
         "and no budget was given"),
        # a run twice on one side, once on the other: which copy is which is a guess
        (TWO_SGDSAI, BASE, [],
         "duplicate run sgdsai/loop (llama2-7b fp32 meta): the result holds it 2 time(s), the baseline 1; runs with "
         "the same model, precision, device, optimizer and implementation are paired in order only when both hold "
         "the same number of them"),
        (BASE, TWO_SGDSAI, [],
         "duplicate run sgdsai/loop (llama2-7b fp32 meta): the result holds it 1 time(s), the baseline 2; runs with "
         "the same model, precision, device, optimizer and implementation are paired in order only when both hold "
         "the same number of them"),
        # one budget a key
        (BASE, BASE, ["--budget", "state=1KiB", "--budget", "state=1GB"],
         "--budget 'state' given twice ('state=1KiB' and 'state=1GB'): give one budget per key"),
        # absurd numbers say what is wrong with them
        (BASE, BASE, ["--tolerance", "1e400"],
         "bad percentage '1e400' (must be a finite percentage such as 1% or 0.5%)"),
        (BASE, BASE, ["--tolerance-latency", "inf%"],
         "bad percentage 'inf%' (must be a finite percentage such as 1% or 0.5%)"),
        (BASE, BASE, ["--budget", "state=1e400GB"],
         "bad size '1e400GB' (too large: a size must be a finite number of bytes below 2**63, about 9.2 EB)"),
        (BASE, BASE, ["--budget", "state=8EiB"],
         "bad size '8EiB' (use a number with a unit such as 80GiB, 80GB or 512MiB)"),
        (BASE, BASE, ["--budget", "state=1e19"],
         "bad size '1e19' (too large: a size must be a finite number of bytes below 2**63, about 9.2 EB)"),
    ],
)
def test_check_refuses_what_it_cannot_judge(files, current, baseline, extra, error):
    result_path, base_path = files(current, baseline)
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path, *extra])
    assert res.exit_code == 2, res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [f"error: {error}"]
    assert "PASS" not in res.output and "Traceback" not in res.output


def test_duplicates_on_both_sides_pair_in_order(files):
    grown = copy.deepcopy(TWO_SGDSAI)
    grown["runs"][1]["memory"]["state_bytes"] += P  # the second copy grew by 2.5%
    result_path, base_path = files(TWO_SGDSAI, TWO_SGDSAI)
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path])
    assert res.exit_code == 0, res.output
    assert "PASS: 9 figures compared over 3 runs" in res.output
    result_path, base_path = files(grown, TWO_SGDSAI)
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path])
    assert res.exit_code == 1, res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [
        "error: FAIL: 1 regression(s)/budget(s) exceeded: state_bytes of sgdsai/loop (llama2-7b fp32 meta) +2.50%"]


def test_a_budget_on_null_figures_is_a_comparison(files):
    current = doc([run("sgdsai", param_bytes=None, grad_bytes=None)])
    result_path, base_path = files(current, doc([_nulls("sgdsai")]))
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path, "--budget", "state=1TiB"])
    assert res.exit_code == 0, res.output
    assert "PASS: 1 figures compared over 1 runs" in res.output


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"schema_version": True}, "unsupported schema_version True (expected 1)"),
        ({"schema_version": 1.0}, "unsupported schema_version 1.0 (expected 1)"),
        ({"schema_version": "1"}, "unsupported schema_version '1' (expected 1)"),
        ({"model.params": True}, "model.params must be a non-negative integer, not True"),
        ({"model.param_bytes": False}, "model.param_bytes must be a non-negative integer or null, not False"),
        ({"environment.device.total_memory_bytes": True},
         "environment.device.total_memory_bytes must be a non-negative integer or null, not True"),
        ({"spec.batch_size": True}, "spec.batch_size must be an integer or null, not True"),
        ({"spec.seq_len": 512.0}, "spec.seq_len must be an integer or null, not 512.0"),
        ({"runs.0.memory.state_bytes": True},
         "runs[0].memory.state_bytes must be a non-negative integer (bytes) or null, not True"),
        ({"runs.1.memory.state_bytes_by_key": {"exp_avg": False}},
         "runs[1].memory.state_bytes_by_key.exp_avg must be a non-negative integer (bytes), not False"),
        ({"runs.0.latency_ms": {"optimizer_step": {"p50": True}}},
         "runs[0].latency_ms.optimizer_step.p50 must be a finite number or null, not True"),
        ({"runs.0.latency_ms": {"first_step": False}},
         "runs[0].latency_ms.first_step must be a finite number or null, not False"),
        ({"interrupted": 1}, "interrupted must be true or false, not 1"),
        # the names runs are matched by are strings (a list or an object here was a TypeError traceback)
        ({"spec.model": [1]}, "spec.model must be a string or null, not [1]"),
        ({"spec.precision": {"a": 1}}, "spec.precision must be a string or null, not {'a': 1}"),
        ({"spec.device": 5}, "spec.device must be a string, not 5"),
        ({"environment.device": None}, "environment.device of a profile must be an object, not None"),
        ({"environment.device.type": [1]}, "environment.device.type must be a string or null, not [1]"),
        ({"spec": {"precision": "fp32"}}, "profile result needs spec.model and a string model.name"),
        ({"model": {"params": 1}}, "profile result needs spec.model and a string model.name"),
        ({"runs.0": {"optimizer": "sgdsai", "status": "ok"}}, "runs[0] needs 'optimizer', 'impl' and 'status'"),
        ({"runs.0.memory": {"state_bytes": 1}}, "runs[0].memory.source must be a string, not None"),
    ],
)
def test_result_validation_refuses_booleans_and_wrong_types(files, changes, error):
    result_path, base_path = files(_with(**changes))
    res = runner.invoke(app, ["check", result_path, "--baseline", base_path])
    assert res.exit_code == 2, res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [
        f"error: {result_path}: {error}"]
    assert "Traceback" not in res.output
