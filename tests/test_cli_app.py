"""What every command shares: --version, an example in each --help, one meaning per short flag."""

from __future__ import annotations

import re

import pytest

from sgdsai_cli.version import __version__

COMMANDS = ["presets", "profile", "gsnr", "check", "plan", "report", "bench-step"]
# short flag -> the one long flag it may stand for, in every command
SHORT = {"-m": "--model", "-p": "--precision", "-d": "--device", "-o": "--optimizer", "-q": "--quiet",
         "-v": "--verbose", "-b": "--baseline", "-g": "--gpu"}


def test_version(cli):
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"sgdsai {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_and_consistent_flags(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0
    text = res.stdout
    assert "Examples:" in text and f"sgdsai {command}" in text.split("Examples:")[1]
    assert "<list[str]>" not in text and "TEXT" not in text
    pairs = re.findall(r"(?m)^\s+(-\w), (--[\w-]+)", text)
    assert all(SHORT.get(short) == long for short, long in pairs), pairs
    assert ("-q", "--quiet") in pairs


@pytest.mark.parametrize("command", ["presets", "profile", "gsnr", "check", "plan", "report", "bench-step"])
def test_every_command_that_prints_results_has_json_and_quiet(cli, command):
    text = cli(command, "--help").stdout
    assert "--format" in text and "--quiet" in text


@pytest.mark.parametrize("command", ["presets", "check x.json --baseline y.json", "plan -m tiny-gpt2",
                                     "report x.json --out o", "bench-step -m tiny-gpt2", "gsnr -m tiny-gpt2",
                                     "profile -m tiny-gpt2"])
def test_unknown_format_is_one_line_exit_2(cli, command):
    res = cli(*command.split(), "--format", "xml")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "unknown format 'xml'" in res.stderr
    assert "Traceback" not in res.output


def test_report_format_json_lists_what_it_wrote(cli, tiny_profile, tmp_path):
    import json

    src = tmp_path / "r.json"
    src.write_text(json.dumps(tiny_profile))
    res = cli("report", src, "--out", tmp_path / "rep", "--format", "json")
    assert res.exit_code == 0, res.output
    paths = json.loads(res.stdout)
    assert paths["html"].endswith("report.html") and (tmp_path / "rep" / "report.md").exists()
    assert cli("report", src, "--out", tmp_path / "rep2", "--quiet").stdout == ""


def test_quiet_check_prints_nothing_on_a_pass(cli, tiny_profile, tmp_path):
    import json

    src = tmp_path / "r.json"
    src.write_text(json.dumps(tiny_profile))
    res = cli("check", src, "--baseline", src, "--quiet")
    assert res.exit_code == 0 and res.stdout == ""


def test_presets_quiet_drops_the_caption(cli):
    loud, quiet = cli("presets"), cli("presets", "--quiet")
    assert "amp-bf16 and amp-fp16 keep fp32" in loud.stdout and "keep fp32" not in quiet.stdout
    assert "llama2-7b" in quiet.stdout
