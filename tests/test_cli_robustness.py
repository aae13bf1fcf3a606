"""Adversarial input on every command: one `error: ...` line naming the value, the documented exit code
(DESIGN.md section 5: 2 bad input, 3 environment, 1 regression), never a traceback."""

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
