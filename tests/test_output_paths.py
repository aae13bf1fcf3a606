"""Output paths are checked before any work: empty paths, two outputs on one file, an output over an
input, ``--json`` on a file ``--out`` writes; a failed command leaves no empty ``--out`` folder it made."""

from __future__ import annotations

import json

import pytest

TINY = ["--model", "tiny-gpt2", "-q"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args, flag", [
    (["profile", *TINY, "--out", ""], "--out"),
    (["profile", *TINY, "--out="], "--out"),
    (["profile", *TINY, "--json", ""], "--json"),
    (["plan", *TINY, "--out", ""], "--out"),
    (["plan", *TINY, "--json="], "--json"),
    (["gsnr", *TINY, "--out", ""], "--out"),
    (["bench-step", *TINY, "--json", ""], "--json"),
    (["report", "r.json", "--out", ""], "--out"),
    (["check", "r.json", "--baseline", ""], "--baseline"),
    (["profile", *TINY, "--profile", ""], "--profile"),
])
def test_an_empty_path_is_refused_and_nothing_is_written(cli, here, args, flag):
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert f"error: {flag} '': the path is empty" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert list(here.iterdir()) == []  # not result.json and figures in the working folder


def test_an_empty_word_after_the_options_separator_is_an_argument(cli, here):
    from sgdsai_cli.cli.app import empty_path_option

    assert empty_path_option(["report", "--", "--out", ""]) is None
    assert empty_path_option(["profile", "--name", "", "--json", "x"]) is None  # not a path option


@pytest.fixture
def files(here):
    (here / "D").mkdir()
    (here / "base.json").write_text("{}")
    (here / "cfg.json").write_text("{}")
    (here / "link.json").symlink_to("base.json")
    return here


@pytest.mark.parametrize("args, message", [
    (["profile", *TINY, "--json", "D/result.json", "--out", "D"],
     "--json and --out 'D' both write 'D/result.json'"),
    (["profile", *TINY, "--json", "D/../D/result.json", "--out", "D"], "both write"),
    (["profile", *TINY, "--json", "D/state-by-key.png", "--out", "D"],
     "--json 'D/state-by-key.png' is a file --out 'D' writes (state-by-key.png)"),
    (["profile", *TINY, "--json", "D/samples-sgdsai.csv", "--out", "D"], "is a file --out 'D' writes"),
    (["profile", *TINY, "--json", "base.json", "--baseline", "base.json"],
     "--json would overwrite 'base.json', the file --baseline reads"),
    (["profile", *TINY, "--json", "link.json", "--baseline", "base.json"], "the file --baseline reads"),
    (["profile", *TINY, "--json", "base.json", "--baseline", "base.json", "--update-baseline"],
     "--json and --baseline both write 'base.json'"),
    (["profile", *TINY, "--out", ".", "--baseline", "result.json", "--update-baseline"], "both write"),
    (["profile", "--model", "cfg.json", "-q", "--json", "cfg.json"], "the file --model reads"),
    (["plan", *TINY, "--json", "D/plan.json", "--out", "D"], "--json and --out 'D' both write 'D/plan.json'"),
    (["plan", "--model", "cfg.json", "-q", "--json", "./cfg.json"], "the file --model reads"),
    (["gsnr", *TINY, "--json", "D/gsnr.json", "--out", "D"], "both write 'D/gsnr.json'"),
    (["gsnr", *TINY, "--json", "D/x.json", "--data", "D/x.csv"], "--json's CSV would overwrite 'D/x.csv'"),
])
def test_conflicting_paths_are_refused_before_any_work(cli, files, args, message):
    (files / "D" / "x.csv").write_text("text")
    before = {p: p.read_bytes() if p.is_file() else None for p in files.rglob("*")}
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    after = {p: p.read_bytes() if p.is_file() else None for p in files.rglob("*")}
    assert after == before  # nothing written, nothing replaced
    assert (files / "link.json").is_symlink()


def test_distinct_paths_all_written(cli, files):
    r = cli("profile", *TINY, "--json", "D/other.json", "--out", "D")
    assert r.exit_code == 0, r.output
    assert json.loads((files / "D" / "other.json").read_text()) == json.loads((files / "D" / "result.json").read_text())


@pytest.mark.parametrize("args, code", [
    (["profile", *TINY, "--device", "cuda", "--out", "a/b/c"], 3),  # no CUDA here (a GPU machine: 0)
    (["profile", "--model", "no-such-model", "--out", "a/b/c"], 2),
    (["plan", "--model", "no-such-model", "--out", "a/b"], 2),
    (["gsnr", "--model", "no-such-model", "--out", "a"], 2),
])
def test_a_failed_command_leaves_no_empty_folder_it_created(cli, here, args, code):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available: the run would succeed")
    (here / "kept").mkdir()
    r = cli(*args)
    assert r.exit_code == code, r.output
    assert sorted(p.name for p in here.iterdir()) == ["kept"]


def test_a_failed_command_keeps_a_folder_it_did_not_create(cli, here):
    (here / "mine").mkdir()
    r = cli("profile", "--model", "no-such-model", "--out", "mine")
    assert r.exit_code == 2
    assert (here / "mine").is_dir()
