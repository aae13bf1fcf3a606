"""`sgdsai profile --baseline / --update-baseline / --profile TOML`: the inline check and the committed gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "profiles" / "baselines"
TINY = ["--model", "tiny-gpt2", "--precision", "fp32", "--device", "meta", "--seq-len", "128",
        "--optimizer", "sgdsai", "--optimizer", "adamw", "--format", "json", "--quiet"]
runner = CliRunner()


def shrunk(tmp_path, factor=0.95, metric="state_bytes", optimizer="sgdsai"):
    doc = json.loads((BASELINES / "tiny-gpt2-fp32.json").read_text())
    for run in doc["runs"]:
        if run["optimizer"] == optimizer:
            run["memory"][metric] = int(run["memory"][metric] * factor)
    p = tmp_path / "shrunk.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize(
    ("baseline", "extra", "code", "needle"),
    [
        (lambda t: BASELINES / "tiny-gpt2-fp32.json", ["--tolerance", "0%"], 0, ""),
        (lambda t: shrunk(t), [], 1, "state_bytes of sgdsai/foreach"),
        (lambda t: shrunk(t), ["--tolerance", "6%"], 0, ""),
        (lambda t: shrunk(t, 0.99, "activation_peak_bytes", "adamw"), ["--tolerance", "0.5%"], 1,
         "activation_peak_bytes of adamw/foreach"),
        (lambda t: t / "missing.json", [], 2, "missing.json: no such file"),
        (lambda t: BASELINES / "tiny-gpt2-bf16.json", [], 2, "nothing to compare"),
    ],
)
def test_profile_baseline_exit_codes(tmp_path, baseline, extra, code, needle):
    res = runner.invoke(app, ["profile", *TINY, "--baseline", str(baseline(tmp_path)), *extra])
    assert res.exit_code == code, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_update_baseline_writes_then_checks(tmp_path):
    base = tmp_path / "base.json"
    res = runner.invoke(app, ["profile", *TINY, "--baseline", str(base), "--update-baseline"])
    assert res.exit_code == 0, res.output
    written = json.loads(base.read_text())
    committed = json.loads((BASELINES / "tiny-gpt2-fp32.json").read_text())
    # the same exact sizes as the committed baseline (only created_utc / environment may differ)
    assert [r["memory"]["state_bytes"] for r in written["runs"]] == [r["memory"]["state_bytes"]
                                                                     for r in committed["runs"]]
    assert not [p for p in tmp_path.iterdir() if p.name != "base.json"]  # no temp file left behind
    res = runner.invoke(app, ["check", str(base), "--baseline", str(BASELINES / "tiny-gpt2-fp32.json"),
                              "--tolerance", "0"])
    assert res.exit_code == 0, res.output


def test_update_baseline_needs_a_path():
    res = runner.invoke(app, ["profile", *TINY, "--update-baseline"])
    assert res.exit_code == 2 and "--update-baseline needs --baseline" in res.output


def test_update_baseline_into_missing_folder_writes_nothing(tmp_path):
    res = runner.invoke(app, ["profile", *TINY, "--baseline", str(tmp_path / "no" / "b.json"), "--update-baseline"])
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "no").exists()


def test_profile_toml_gates_on_its_committed_baseline(tmp_path):
    # profiles/tiny-ci.toml names baselines/tiny-gpt2-fp32.json relative to itself, tolerance 0%
    res = runner.invoke(app, ["profile", "--profile", str(ROOT / "profiles" / "tiny-ci.toml"), "--format", "json",
                              "--quiet"])
    assert res.exit_code == 0, res.output
    # the same spec against a shrunk baseline: a copy of the TOML beside it fails
    shutil.copy(ROOT / "profiles" / "tiny-ci.toml", tmp_path / "ci.toml")
    (tmp_path / "baselines").mkdir()
    shutil.copy(shrunk(tmp_path), tmp_path / "baselines" / "tiny-gpt2-fp32.json")
    res = runner.invoke(app, ["profile", "--profile", str(tmp_path / "ci.toml"), "--format", "json", "--quiet"])
    assert res.exit_code == 1, res.output
    assert "state_bytes of sgdsai/foreach" in res.output


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "profiles").glob("*.toml")))
def test_committed_profiles_parse(name):
    from sgdsai_cli.analysis.specfile import load_spec_file

    data = load_spec_file(ROOT / "profiles" / name)
    assert data["model"] and data["optimizers"]
    if "baseline" in data:
        assert Path(data["baseline"]).is_file()


def test_every_preset_has_fp32_and_bf16_baselines():
    from sgdsai_cli.models import PRESETS

    names = {p.name for p in BASELINES.glob("*.json")}
    assert names == {f"{m}-{p}.json" for m in PRESETS for p in ("fp32", "bf16")}
    for path in BASELINES.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["spec"]["device"] == "meta"
        assert [r["optimizer"] for r in doc["runs"]] == ["sgdsai", "adamw"]
        assert all(r["status"] == "ok" for r in doc["runs"])
