"""`sgdsai check` end to end: every exit code (0 pass, 1 regression, 2 bad input) with its message."""

from __future__ import annotations

import copy
import json

import pytest
from test_check import BASE, doc, run, scaled  # the same synthetic llama2-7b documents
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
        (BASE, BASE, ["--budget", "state=30GiB", "--budget", "state=60GiB"], 0, "PASS"),  # last one wins
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
