"""scripts/gate.py (what .ci/gate runs): a baseline that holds, one that regressed, one that is broken."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "profiles" / "baselines" / "tiny-gpt2-fp32.json"


@pytest.fixture(scope="module")
def gate():
    """scripts/gate.py imported by name (its worker processes import it again, from the same path)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        yield importlib.import_module("gate")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
        sys.modules.pop("gate", None)


def test_a_committed_baseline_holds(gate):
    code, text = gate.gate_one(str(BASELINE), "0%")
    assert code == 0, text
    assert text == ("gate: ok   tiny-gpt2-fp32 (PASS: 12 figures compared over 2 runs, none regressed or over "
                    "budget)")


def test_a_baseline_smaller_than_today_is_a_regression(gate, tmp_path):
    doc = json.loads(BASELINE.read_text())
    doc["runs"][0]["memory"]["state_bytes"] -= 1024  # the baseline remembers less state than the code makes
    path = tmp_path / "tiny-gpt2-fp32.json"
    path.write_text(json.dumps(doc))
    code, text = gate.gate_one(str(path), "0%")
    assert code == 1
    assert text.startswith("gate: FAIL tiny-gpt2-fp32 (exit 1)\n") and "state" in text


@pytest.mark.parametrize("content", ["{not json", json.dumps({"spec": {}}), json.dumps([1, 2])])
def test_a_broken_baseline_is_exit_2(gate, tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content)
    code, text = gate.gate_one(str(path), "0%")
    assert code == 2 and text.startswith(f"gate: {path}: cannot read its spec: not a profile baseline")


def test_main_runs_the_named_baselines_in_workers(gate, capsys, monkeypatch):
    monkeypatch.setenv("GATE_JOBS", "1")
    assert gate.main([str(BASELINE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gate: ok   tiny-gpt2-fp32 (PASS") and out[-1].startswith("gate: all 1 baselines hold (")
