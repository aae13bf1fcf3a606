"""The ``sgdsai`` process and its standard streams, with real processes: a reader that goes away, a
closed stdout, an encoding that cannot show a path, a home folder that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _sgdsai(*args, env=None, cwd=None, close_stdout_reader=False, shell_suffix=None):
    """Run ``python -m sgdsai_cli ARGS``; (exit code, stdout, stderr)."""
    cmd = [sys.executable, "-m", "sgdsai_cli", *map(str, args)]
    if shell_suffix is not None:  # e.g. '>&-' (stdout closed)
        cmd = ["sh", "-c", " ".join(f"'{c}'" for c in cmd) + " " + shell_suffix]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or _env(), cwd=cwd)
    if close_stdout_reader:  # the reader went away before anything was written: every write is EPIPE
        proc.stdout.close()
        _, err = proc.communicate(timeout=TIMEOUT_S)
        return proc.returncode, b"", err.decode("utf-8", "replace")
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _clean(err: str) -> None:
    for bad in ("Traceback", "Exception ignored", "BrokenPipeError", "UnicodeEncodeError"):
        assert bad not in err, err


@pytest.fixture
def baselines(tmp_path, tiny_profile):
    passing = tmp_path / "pass.json"
    passing.write_text(json.dumps(tiny_profile))
    smaller = json.loads(json.dumps(tiny_profile))
    for run in smaller["runs"]:
        run["memory"]["state_bytes"] //= 2  # the new result looks like a regression against this
    failing = tmp_path / "fail.json"
    failing.write_text(json.dumps(smaller))
    return {"pass": passing, "fail": failing}


@pytest.mark.parametrize("which, code", [("pass", 0), ("fail", 1)])
def test_a_reader_that_goes_away_keeps_the_verdicts_code(baselines, which, code):
    rc, _, err = _sgdsai("profile", "--model", "tiny-gpt2", "--seq-len", "64", "--baseline", baselines[which],
                         close_stdout_reader=True)
    assert rc == code, err
    _clean(err)


def test_a_closed_stdout_is_an_error_not_a_silent_success():
    rc, _, err = _sgdsai("presets", shell_suffix=">&-")
    assert rc == 2
    assert err.strip().splitlines() == [
        "error: standard output is closed: nothing could be printed (redirect it to a file or /dev/null)"]


def test_an_encoding_that_cannot_show_a_path_escapes_it(tmp_path):
    folder = tmp_path / "résultats"
    folder.mkdir()
    env = _env(PYTHONIOENCODING="ascii")
    rc, out, err = _sgdsai("profile", "--model", "tiny-gpt2", "--seq-len", "64", "--json", folder / "é.json", env=env)
    assert rc == 0, err
    _clean(err)
    assert "r\\xe9sultats" in err and (folder / "é.json").exists()
    rc, _, err = _sgdsai("profile", "--model", "gpt2-é", env=env)  # an error naming the value
    assert rc == 2
    _clean(err)
    assert "gpt2-\\xe9" in err and len(err.strip().splitlines()) == 1


def test_a_home_that_does_not_exist_is_not_created(tmp_path):
    home = tmp_path / "nonexistent"
    env = _env(HOME=str(home))
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "SGDSAI_CACHE_DIR", "MPLCONFIGDIR"):
        env.pop(var, None)
    # a CPU run builds the C kernel (its cache lives under ~/.cache); --out draws figures (matplotlib's
    # config and font cache live under ~/.config and ~/.cache)
    rc, _, err = _sgdsai("profile", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "2", "--seq-len", "32",
                         "-o", "sgdsai", "--out", tmp_path / "run", "-q", env=env)
    assert rc == 0, err
    _clean(err)
    assert (tmp_path / "run" / "result.json").exists()
    assert not home.exists()
