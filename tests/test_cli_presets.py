"""`sgdsai presets`: the table and the JSON list."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.models import PRESETS

runner = CliRunner()


def test_presets_table_lists_every_preset():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0, res.output
    for name in PRESETS:
        assert name in res.stdout
    assert "6,738,415,616" in res.stdout and "25.10" in res.stdout and "12.55" in res.stdout


def test_presets_json_is_a_list_of_objects():
    res = runner.invoke(app, ["presets", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == list(PRESETS)
    by_name = {r["name"]: r for r in rows}
    llama = by_name["llama2-7b"]
    assert llama["family"] == "llama" and llama["params"] == 6_738_415_616
    assert llama["bytes_fp32"] == 26_953_662_464 == llama["bytes_amp_bf16"] == llama["bytes_amp_fp16"]
    assert llama["bytes_bf16"] == llama["bytes_fp16"] == 13_476_831_232
    assert by_name["gpt2"]["params"] == 124_439_808  # tied head counted once


@pytest.mark.parametrize("fmt", ["yaml", "csv"])
def test_presets_bad_format_exits_2(fmt):
    res = runner.invoke(app, ["presets", "--format", fmt])
    assert res.exit_code == 2
    assert res.stderr.startswith(f"error: unknown format '{fmt}'") and len(res.stderr.splitlines()) == 1
