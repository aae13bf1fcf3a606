"""sgdsai_cli.render.report and `sgdsai report`: pages, embedded figures, graceful degradation, bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.errors import BadInput
from sgdsai_cli.render.report import build_report

INPUTS = Path(__file__).resolve().parent.parent / "reports" / "example" / "inputs"
PROFILE = INPUTS / "profile-llama2-7b-fp32.json"
GSNR = INPUTS / "gsnr-tiny-gpt2.json"
PLAN = INPUTS / "plan-llama2-7b.json"
runner = CliRunner()


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report([PROFILE, GSNR, PLAN], out), out


def test_markdown_has_every_section_table_and_figure(full_report):
    paths, out = full_report
    md = paths.markdown.read_text()
    for title in ("## Profile: llama2-7b, fp32, meta", "## g-SNR: tiny-gpt2", "## Plan: llama2-7b, batch 1 x seq 512"):
        assert title in md
    assert "| state | 25.10 | 50.21 |" in md  # the profile table: sgdsai vs adamw state, GiB
    assert "| adamw/foreach | fp32 | h100-80gb |" in md  # the plan table
    assert "**g-SNR by block type**" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == len(paths.figures) >= 4
    for rel in images:
        assert (out / rel).is_file() and (out / rel).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.svg"))  # the report keeps PNG only


def test_html_is_self_contained(full_report):
    paths, _ = full_report
    page = paths.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == len(paths.figures)
    # no external asset of any kind: every src is inline data, no stylesheet or script links
    assert re.findall(r'src="(?!data:)', page) == []
    assert "<link" not in page and "<script" not in page and "http://" not in page and "https://" not in page
    assert "h200-141gb" in page and "6,738,415,616 in 291 tensors" in page


def test_tables_escape_html(tmp_path):
    doc = json.loads(PROFILE.read_text())
    doc["spec"]["model"] = "<b>evil</b>"
    p = tmp_path / "evil.json"
    p.write_text(json.dumps(doc))
    paths = build_report([p], tmp_path / "out")
    page = paths.html.read_text()
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page


@pytest.mark.parametrize(
    ("module", "note"),
    [("sgdsai_cli.render.gsnr_figures", "g-SNR figures skipped"), ("sgdsai_cli.render.profile", "profile tables skipped"),
     ("sgdsai_cli.render.profile_figures", "profile figures skipped")],
)
def test_missing_renderer_degrades_to_a_note(tmp_path, monkeypatch, module, note):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    paths = build_report([PROFILE, GSNR], tmp_path / "out")
    md = paths.markdown.read_text()
    assert note in md
    assert "## g-SNR: tiny-gpt2" in md and "## Profile: llama2-7b, fp32, meta" in md


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda t: t / "missing.json", "no such file"),
        (lambda t: _write(t, "bad.json", "{oops"), "not valid JSON"),
        (lambda t: _write(t, "v2.json", json.dumps({"schema_version": 2, "kind": "profile"})),
         "unsupported schema_version 2"),
        (lambda t: _write(t, "other.json", json.dumps({"schema_version": 1, "kind": "check"})),
         "kind 'check' is not one of"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, make, needle):
    bad = make(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["report", str(PROFILE), str(bad), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not out.exists()  # inputs are validated before the folder is made


def test_out_is_a_file_exits_2(tmp_path):
    f = _write(tmp_path, "file", "keep")
    res = runner.invoke(app, ["report", str(PROFILE), "--out", str(f)])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    assert f.read_text() == "keep"


def test_no_inputs():
    with pytest.raises(BadInput, match="no result files"):
        build_report([], "unused")
    res = runner.invoke(app, ["report", "--out", "x"])
    assert res.exit_code == 2  # Typer: missing argument


def test_cli_report(tmp_path):
    res = runner.invoke(app, ["report", str(PLAN), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output and "2 figures embedded" in res.output
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["figures", "report.html", "report.md"]
