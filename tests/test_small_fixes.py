"""Messages that say what is wrong and where: infinite numbers, a value from a TOML spec names its file,
a narrow terminal keeps every column; the GPU check script's exit status and output folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def doc_path(tmp_path, tiny_profile):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(tiny_profile))
    return p


@pytest.mark.parametrize("args, message", [
    (["--tolerance", "1e400"], "bad percentage '1e400' (must be a finite percentage"),
    (["--tolerance", "inf%"], "must be a finite percentage"),
    (["--budget", "state=1e400GB"], "a size must be a finite number of bytes"),
])
def test_infinite_numbers_say_finite(cli, doc_path, args, message):
    r = cli("check", doc_path, "--baseline", doc_path, *args)
    assert r.exit_code == 2 and message in r.output
    assert "must be zero or more" not in r.output and "greater than zero" not in r.output


@pytest.mark.parametrize("toml, extra, message", [
    ('model = "tiny-gpt2"\ntolerance = "1e400"\n', [],
     "spec.toml: key 'tolerance': bad percentage '1e400'"),
    ('model = "tiny-gpt2"\nbatch_size = 0\n', [], "spec.toml: bad batch_size 0 (must be at least 1)"),
    ('model = "no-such-model"\n', [], "spec.toml: key 'model': unknown model 'no-such-model'"),
    ('model = "tiny-gpt2"\nprecision = "fp33"\noptimizers = ["sgdsai"]\n', [],
     "spec.toml: key 'precision': unknown precision 'fp33'"),
    ('model = "tiny-gpt2"\noptimizers = ["adamz"]\nprecision = "fp32"\n', [],
     "spec.toml: key 'optimizers': unknown optimizer 'adamz'"),
    ('model = "tiny-gpt2"\nseq_len = 100000\n', [], "spec.toml: seq_len 100000 is longer than"),
    # the same value given on the command line is the flag's error, not the file's
    ('model = "tiny-gpt2"\n', ["--batch-size", "0"], "error: bad --batch-size '0'"),
    ('model = "tiny-gpt2"\nbatch_size = 2\n', ["--seq-len", "100000"], "--seq-len 100000 is longer than"),
])
def test_an_error_in_a_toml_value_names_the_file(cli, tmp_path, toml, extra, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(toml)
    r = cli("profile", "--profile", spec, *extra)
    assert r.exit_code == 2, r.output
    assert message in r.output
    if extra:
        assert "spec.toml" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("columns", ["40", "60"])
def test_a_narrow_terminal_keeps_every_column(cli, doc_path, monkeypatch, columns):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws as for a terminal of COLUMNS columns
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setenv("NO_COLOR", "1")
    r = cli("check", doc_path, "--baseline", doc_path)
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if "metric" in line)
    for word in ("run", "metric", "baseline", "current", "change", "verdict"):
        assert word in header  # no header broken into letters
    rows = [line for line in r.output.splitlines() if "sgdsai/foreach" in line]
    assert rows and all(line.rstrip().endswith("│") and " ok " in line for line in rows)


def test_a_wide_terminal_is_left_to_rich(cli, doc_path, monkeypatch):
    from sgdsai_cli.analysis.check import as_profile, compare
    from sgdsai_cli.cli.app import word_width
    from sgdsai_cli.render.check import check_table

    doc = as_profile(doc_path)
    table = check_table(compare(doc, doc, tolerance=0.01))
    assert 40 < word_width(table) <= 100  # between, rich folds cells as before
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    r = cli("check", doc_path, "--baseline", doc_path)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.output)  # bold headers
    table_lines = [line for line in plain.splitlines() if line[:1] in "┏┃┡│└"]
    assert table_lines and max(len(line) for line in table_lines) <= 100


def _gpu_check(tmp_path, budget: str):
    env = dict(os.environ, PY=sys.executable, BUDGET=budget, OUT="rel-out")
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_gpu_check_with_nothing_run_exits_2_and_writes_where_it_was_called(tmp_path):
    r = _gpu_check(tmp_path, "0")
    assert r.returncode == 2, r.stdout + r.stderr
    steps = (tmp_path / "rel-out" / "logs" / "steps.log").read_text()
    assert "skipped (budget of 0s spent)" in steps
    assert not (ROOT / "rel-out").exists()  # not relative to the repository
    assert "0 step(s) passed" in r.stdout


def test_gpu_check_with_every_step_failed_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("with CUDA the steps would run for real")
    r = _gpu_check(tmp_path, "40")  # the first step (exit 3: no CUDA) runs, the budget stops the rest
    steps = (tmp_path / "rel-out" / "logs" / "steps.log").read_text()
    assert "rc=3" in steps, steps
    assert r.returncode == 2, r.stdout + r.stderr
