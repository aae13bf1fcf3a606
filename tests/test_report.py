"""render.report and `sgdsai report`: pages, embedded figures, measured runs, graceful degradation, bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure.sampler import SAMPLE_COLUMNS
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
    for title in ("## Profile (estimate): llama2-7b, fp32", "## g-SNR: tiny-gpt2",
                  "## Plan (estimate): llama2-7b, batch 1 x seq 512"):
        assert title in md
    assert "| state | 25.10 | 50.21 |" in md  # the profile table: sgdsai vs adamw state, GiB
    assert "| adamw/foreach | fp32 | h100-80gb |" in md  # the plan table
    assert "**g-SNR by block type**" in md
    assert "| norm | 10 |" in md and "%" in md  # g-SNR table cells formatted: counts, changes in percent
    assert "no device: an estimate" in md  # not "meta"
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
    [("sgdsai_cli.render.gsnr_figures", "g-SNR figures skipped"),
     ("sgdsai_cli.render.profile", "profile tables skipped"),
     ("sgdsai_cli.render.profile_figures", "profile figures skipped"),
     ("sgdsai_cli.render.gsnr", "g-SNR tables skipped")],
)
def test_missing_renderer_degrades_to_a_note(tmp_path, monkeypatch, module, note):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    paths = build_report([PROFILE, GSNR], tmp_path / "out")
    md = paths.markdown.read_text()
    assert note in md
    assert "## g-SNR: tiny-gpt2" in md and "## Profile (estimate): llama2-7b, fp32" in md


MiB = 1 << 20
U = 1 << 28  # 256 MiB: the fixture's sizes read in GiB
PHASES = ("forward", "backward", "optimizer_step", "zero_grad")


def _measured_run(optimizer: str, state_mib: int) -> dict:
    est = {"param_bytes": 8 * U, "grad_bytes": 8 * U, "state_bytes": state_mib * U,
           "activation_peak_bytes": 20 * U, "step_transient_bytes": 0, "peak_bytes": (36 + state_mib) * U,
           "forward_backward_peak_bytes": 28 * U}
    phases = {p: {"before_bytes": (16 + state_mib + i) * U, "allocated_bytes": (16 + state_mib + i) * U,
                  "allocated_peak_bytes": (30 + state_mib + i) * U, "steps": 3} for i, p in enumerate(PHASES)}
    timing = {"p50": 2.0, "p90": 2.5, "min": 1.5, "max": 3.0, "n": 3}
    return {
        "optimizer": optimizer, "impl": "foreach", "status": "ok", "error": None, "note": None,
        "latency_ms": {**{p: timing for p in PHASES}, "step": timing, "first_step": 9.0},
        "memory": {"source": "measured", "state_bytes": state_mib * U,
                   "state_bytes_by_key": {"momentum_buffer" if optimizer == "sgdsai" else "exp_avg": state_mib * U},
                   "param_bytes": 8 * U, "grad_bytes": 8 * U, "activation_peak_bytes": 20 * U,
                   "step_transient_bytes": 0, "peak_allocated_bytes": (35 + state_mib) * U,
                   "peak_reserved_bytes": None, "nvml_used_peak_bytes": None,
                   "estimated_peak_bytes": (36 + state_mib) * U,
                   "details": {"phases": phases, "estimate": est,
                               "estimate_error_pct": {"peak_bytes": 2.857142857, "state_bytes": 0.0}}},
    }


def _measured_doc() -> dict:
    return {"schema_version": 1, "kind": "profile", "tool_version": "0.1.0", "created_utc": "2026-01-01T00:00:00Z",
            "environment": {"python": "3.11", "torch": "2.x", "platform": "test",
                            "device": {"type": "cpu", "name": "Test CPU", "total_memory_bytes": None}},
            "spec": {"model": "tiny-gpt2", "precision": "fp32", "device": "cpu", "batch_size": 1, "seq_len": 16,
                     "warmup": 2, "steps": 3, "seed": 0},
            "model": {"name": "tiny-gpt2", "family": "gpt2", "params": 2 * MiB, "param_tensors": 28},
            "runs": [_measured_run("sgdsai", 8), _measured_run("adamw", 16)]}


def _samples_csv(path: Path) -> None:
    """Setup, then 5 steps (2 warmup, 3 measured) of 4 phases, 3 samples each: dense enough to show phases."""
    lines = [",".join(SAMPLE_COLUMNS)]
    t = 0.0
    rows = [(-1, "setup")] * 5 + [(step, p) for step in range(5) for p in PHASES for _ in range(3)] + [(4, "idle")]
    for i, (step, phase) in enumerate(rows):
        t += 0.01
        lines.append(",".join([f"{t:.3f}", str(step), phase, str((10 + i % 7) * MiB), "", str(300 * MiB)] + [""] * 5))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def measured(tmp_path):
    """A measured profile result with samples-<optimizer>.csv beside it, as a real run's --out folder has."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_dir / "result.json"
    result.write_text(json.dumps(_measured_doc()))
    for name in ("sgdsai", "adamw"):
        _samples_csv(run_dir / f"samples-{name}.csv")
    return result


def test_measured_profile_has_phase_and_estimate_tables_and_memory_figure(measured, tmp_path):
    paths = build_report([measured], tmp_path / "out")
    md = paths.markdown.read_text()
    assert "## Profile (measured): tiny-gpt2, fp32, Test CPU" in md
    assert "**Memory by phase (maxima over the steady steps, cpu)**" in md
    assert "| sgdsai | optimizer step | 6.50 GiB | 10.00 GiB | 3.50 GiB |" in md  # sizes with units
    assert "**Estimate against measurement**" in md
    assert "| component | sgdsai estimate | sgdsai measured | sgdsai error | adamw estimate |" in md
    assert "| peak | 11.00 GiB | 10.75 GiB | +2.9% |" in md  # error as a signed percentage
    assert [p.name for p in paths.figures] == ["state-by-key.png", "latency.png", "memory-over-time.png"]
    assert paths.html.read_text().count('src="data:image/png;base64,') == 3


def test_measured_profile_without_samples_says_so(measured, tmp_path):
    for csv in measured.parent.glob("samples-*.csv"):
        csv.unlink()
    paths = build_report([measured], tmp_path / "out")
    md = paths.markdown.read_text()
    assert "memory-over-time" not in " ".join(p.name for p in paths.figures)
    assert "no memory-over-time figure: no samples-<optimizer>.csv beside" in md
    assert "**Memory by phase" in md  # the tables do not need the samples


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
