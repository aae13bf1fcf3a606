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
