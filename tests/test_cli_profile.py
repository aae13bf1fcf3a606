"""`sgdsai profile` end to end on the meta device: outputs, --json schema, TOML specs, baselines, errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from typer.testing import CliRunner

from sgdsai_cli.analysis.specfile import load_spec_file
from sgdsai_cli.cli import app
from sgdsai_cli.schema import load_document

runner = CliRunner()
TINY = ["profile", "--model", "tiny-gpt2", "--seq-len", "64", "--device", "meta"]


def _ok(args: list[str]):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_llama2_7b_fp32_table_without_gpu():
    res = _ok(["profile", "--model", "llama2-7b", "--precision", "fp32", "--verbose"])
    out = res.stdout
    assert "llama2-7b | fp32 | meta" in out
    assert "25.10" in out and "50.21" in out  # SGD-SaI and AdamW state, GiB
    assert "25.10 (50.0%)" in out  # state saving against AdamW
    assert "exact from the meta device" in out and "CUDA context" in out
    assert "fits A100 80GB" in out and "6,738,415,616 parameters in 291 tensors" in out
    assert "timing: sized in" in res.stderr and "traced 3 of 32 layers" in res.stderr


def test_json_file_validates_against_the_schema(tmp_path):
    path = tmp_path / "r.json"
    _ok(TINY + ["--json", str(path), "-o", "sgdsai", "-o", "adamw-fused", "--quiet"])
    doc = load_document(path, kinds=("profile",))
    assert doc["schema_version"] == 1 and doc["spec"]["device"] == "meta" and doc["spec"]["seq_len"] == 64
    assert [r["optimizer"] for r in doc["runs"]] == ["sgdsai", "adamw-fused"]
    for run in doc["runs"]:
        m = run["memory"]
        assert m["source"] == "fake" and m["state_bytes"] == sum(m["state_bytes_by_key"].values())
        for key in ("param_bytes", "grad_bytes", "activation_peak_bytes", "step_transient_bytes",
                    "estimated_peak_bytes"):
            assert isinstance(m[key], int)
        assert m["peak_allocated_bytes"] is None and m["nvml_used_peak_bytes"] is None
    assert doc["runs"][0]["memory"]["state_bytes_by_key"]["momentum_buffer"] == 141_056 * 4
    assert doc["runs"][1]["impl"] == "fused" and doc["runs"][1]["note"] is None  # its own kernel, on fake tensors


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown"])
def test_machine_formats_parse(fmt):
    res = _ok(TINY + ["--format", fmt, "--quiet"])
    out = res.stdout
    if fmt == "json":
        doc = json.loads(out)
        assert [r["optimizer"] for r in doc["runs"]] == ["sgdsai", "adamw", "adamw-fused"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["optimizer"] for r in rows] == ["sgdsai", "adamw", "adamw-fused"]
        fused_saving = [r["peak_saving_vs_adamw_fused_bytes"] for r in rows]
        assert int(fused_saving[0]) > 0 and fused_saving[2] == ""
        assert int(rows[0]["state_bytes[momentum_buffer]"]) == 141_056 * 4
        assert int(rows[1]["state_bytes[exp_avg]"]) == 141_056 * 4
        assert rows[1]["state_bytes[momentum_buffer]"] == ""
    else:
        lines = out.splitlines()
        assert lines[0].startswith("### tiny-gpt2 | fp32 | meta")
        assert "| GiB unless marked | sgdsai | adamw | adamw-fused |" in lines
        assert any(line.startswith("| state saving vs AdamW |") for line in lines)
        assert any(line.startswith("| peak saving vs AdamW (foreach) |") for line in lines)
        assert any(line.startswith("| peak saving vs AdamW (fused) |") for line in lines)


def test_quiet_drops_notes_and_progress():
    loud, quiet = _ok(TINY), _ok(TINY + ["--quiet"])
    assert "exact from the meta device" in loud.stdout and "sizing tiny-gpt2" in loud.stderr
    assert "exact from the meta device" not in quiet.stdout and quiet.stderr == ""
    assert "state saving vs AdamW" in quiet.stdout


def test_profile_toml_with_command_line_override(tmp_path):
    spec = tmp_path / "run.toml"
    spec.write_text('model = "tiny-llama"\nprecision = "bf16"\noptimizers = ["sgdsai", "sgd"]\n'
                    'batch_size = 2\nseq_len = 32\n')
    res = _ok(["profile", "--profile", str(spec), "--precision", "fp32", "--format", "json", "-q"])
    doc = json.loads(res.stdout)
    assert doc["spec"]["model"] == "tiny-llama" and doc["spec"]["precision"] == "fp32"
    assert doc["spec"]["batch_size"] == 2 and doc["spec"]["seq_len"] == 32
    assert [r["optimizer"] for r in doc["runs"]] == ["sgdsai", "sgd"]
    assert load_spec_file(spec)["optimizers"] == ["sgdsai", "sgd"]


def test_out_folder_gets_result_json(tmp_path):
    out = tmp_path / "deep" / "out"
    _ok(TINY + ["--out", str(out), "-q"])
    assert load_document(out / "result.json")["kind"] == "profile"


def test_baseline_update_then_pass_then_regress(tmp_path):
    base = tmp_path / "base.json"
    _ok(TINY + ["--baseline", str(base), "--update-baseline", "-q"])
    assert load_document(base)["runs"][0]["optimizer"] == "sgdsai"
    _ok(TINY + ["--baseline", str(base), "-q"])
    doc = json.loads(base.read_text())
    for run in doc["runs"]:  # a baseline that used 10% less state: this run is a regression
        run["memory"]["state_bytes"] = int(run["memory"]["state_bytes"] * 0.9)
    base.write_text(json.dumps(doc))
    res = runner.invoke(app, TINY + ["--baseline", str(base), "-q"])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ")


def _bad_toml(tmp_path, text: str) -> str:
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "llama2-7"], 2, "did you mean llama2-7b"),
        (["--model", "tiny-gpt2", "--precision", "fp64"], 2, "unknown precision 'fp64'"),
        (["--model", "tiny-gpt2", "-o", "adamx"], 2, "unknown optimizer 'adamx'"),
        (["--model", "tiny-gpt2", "-o", "torch:Adamm"], 2, "did you mean Adam"),
        (["--model", "tiny-gpt2", "--batch-size", "0"], 2, "bad --batch-size '0'"),
        (["--model", "tiny-gpt2", "--seq-len", "ten"], 2, "bad --seq-len 'ten'"),
        (["--model", "tiny-gpt2", "--steps", "-1"], 2, "bad --steps '-1'"),
        (["--model", "tiny-gpt2", "--sample-interval-ms", "0"], 2, "bad --sample-interval-ms '0'"),
        (["--model", "tiny-gpt2", "--tolerance", "x%"], 2, "bad percentage 'x%'"),
        (["--model", "tiny-gpt2", "--format", "xml"], 2, "unknown format 'xml'"),
        (["--model", "tiny-gpt2", "--seq-len", "64", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["--model", "tiny-gpt2", "--seq-len", "999"], 2, "longer than tiny-gpt2's 128 positions"),
        (["--model", "tiny-gpt2", "--json", "/nonexistent-dir/r.json"], 2, "does not exist"),
        (["--model", "tiny-gpt2", "--baseline", "/nonexistent-dir/b.json"], 2, "no such file"),
        (["--model", "tiny-gpt2", "--update-baseline"], 2, "needs --baseline"),
        (["--model", "tiny-gpt2", "--quiet", "--verbose"], 2, "exclude each other"),
        ([], 2, "missing --model"),
        (["--profile", "/nonexistent-dir/spec.toml"], 2, "no such file"),
        (["--model", "./missing/config.json"], 2, "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, code, message):
    res = runner.invoke(app, ["profile", *args])
    assert res.exit_code == code, res.output
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "text, message",
    [
        ('model = "tiny-gpt2"\nbatchsize = 2\n', "unknown key 'batchsize' (did you mean batch_size?)"),
        ('model = "tiny-gpt2"\nseq_len = "long"\n', "key 'seq_len' must be a whole number, got 'long'"),
        ('model = "tiny-gpt2"\noptimizers = "adamw"\n', "key 'optimizers' must be a list"),
        ('model = "tiny-gpt2\n', "not valid TOML"),
        ('model = "tiny-gpt2"\nseq_len = 64\noptimizers = ["adamw", "nope"]\n', "unknown optimizer 'nope'"),
    ],
)
def test_bad_profile_toml_exits_2_naming_file_and_key(tmp_path, text, message):
    path = _bad_toml(tmp_path, text)
    res = runner.invoke(app, ["profile", "--profile", path])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and len(res.stderr.splitlines()) == 1
    if "TOML" in message or "key" in message:
        assert path in res.stderr


def test_bad_config_json_exits_2(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": 64}')
    res = runner.invoke(app, ["profile", "--model", str(cfg)])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and str(cfg) in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_exits_3(device):
    res = runner.invoke(app, TINY[:-2] + ["--device", device])
    assert res.exit_code == 3, res.output
    assert "CUDA is not available" in res.stderr and len(res.stderr.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks CUDA when there is one")
def test_auto_device_is_meta_without_cuda():
    res = _ok(["profile", "--model", "tiny-vit", "--format", "json", "-q"])
    assert json.loads(res.stdout)["spec"]["device"] == "meta"


def test_toml_baseline_path_is_found_beside_the_toml_file(tmp_path, monkeypatch):
    (tmp_path / "profiles" / "baselines").mkdir(parents=True)
    spec = tmp_path / "profiles" / "tiny.toml"
    spec.write_text('model = "tiny-gpt2"\nseq_len = 64\nbaseline = "baselines/tiny.json"\n')
    monkeypatch.chdir(tmp_path)
    _ok(["profile", "--profile", "profiles/tiny.toml", "--update-baseline", "-q"])
    assert load_document(tmp_path / "profiles" / "baselines" / "tiny.json")["spec"]["seq_len"] == 64
    # a path relative to the working folder works too
    spec.write_text('model = "tiny-gpt2"\nseq_len = 64\nbaseline = "profiles/baselines/tiny.json"\n')
    _ok(["profile", "--profile", "profiles/tiny.toml", "-q"])


def _measured_doc() -> dict:
    """A document as a real CUDA run writes it: measured figures, latencies, an oom row, nulls."""
    gib = 1024**3
    memory = {"source": "measured", "state_bytes": 2 * gib, "state_bytes_by_key": {"momentum_buffer": 2 * gib},
              "param_bytes": 2 * gib, "grad_bytes": 2 * gib, "activation_peak_bytes": None,
              "step_transient_bytes": None, "peak_allocated_bytes": 7 * gib, "peak_reserved_bytes": 8 * gib,
              "nvml_used_peak_bytes": 30 * gib, "estimated_peak_bytes": None}
    latency = {"optimizer_step": {"p50": 1.5, "p90": 2.0, "min": 1.0, "max": 3.0, "n": 10},
               "forward": {"p50": 10.0}, "backward": {"p50": 20.0}, "first_step": 50.0}
    return {
        "schema_version": 1, "kind": "profile", "tool_version": "0.1.0", "created_utc": "2026-01-01T00:00:00Z",
        "environment": {"device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}},
        "spec": {"model": "gpt2", "precision": "bf16", "device": "cuda", "batch_size": 8, "seq_len": 1024},
        "model": {"name": "gpt2", "params": 124_439_808, "param_tensors": 148},
        "runs": [
            {"optimizer": "sgdsai", "impl": "compiled", "status": "ok", "memory": memory, "latency_ms": latency,
             "error": None},
            {"optimizer": "adamw", "impl": "foreach", "status": "oom", "memory": None, "latency_ms": None,
             "error": "CUDA out of memory"},
        ],
    }


def test_renderers_show_measured_documents_and_dashes():
    from rich.console import Console

    from sgdsai_cli.render import profile as render

    doc = _measured_doc()
    console = Console(width=100, record=True)
    for item in render.profile_renderables(doc):
        console.print(item)
    text = console.export_text()
    assert "gpt2 | bf16 | NVIDIA H100 80GB HBM3 | batch 8 x seq 1024" in text
    assert "NVML used peak" in text and "30.00" in text and "step p50 (ms)" in text
    assert "adamw: oom: CUDA out of memory" in text
    assert "fits: NVML used peak" in text
    frames = render.profile_frames(doc)
    table = next(iter(frames.values()))
    assert table.loc["peak reserved", "sgdsai"] == "8.00" and table.loc["peak reserved", "adamw"] == "-"
    assert table.loc["fits RTX 4090 24GB (23.6)", "sgdsai"] == "no"
    assert table.loc["fits A100 40GB (39.4)", "sgdsai"] == "yes"
    assert "state saving vs AdamW" not in table.index  # no AdamW run to compare with
    rows = list(csv.DictReader(io.StringIO(render.profile_csv(doc))))
    assert rows[0]["nvml_used_peak_bytes"] == str(30 * 1024**3) and rows[1]["nvml_used_peak_bytes"] == ""
    assert rows[1]["status"] == "oom" and rows[0]["step_p50_ms"] == "1.5"
    assert "| status | ok | oom |" in render.profile_markdown(doc)


def test_peak_saving_against_foreach_and_fused_adamw():
    """Foreach AdamW's step makes a parameter-sized sqrt(exp_avg_sq); fused AdamW's makes nothing: two baselines."""
    from sgdsai_cli import profile
    from sgdsai_cli.render.profile import summary_rows

    result = profile(model="tiny-gpt2", seq_len=8, device="meta")  # the default list: sgdsai, adamw, adamw-fused
    runs = {r.optimizer: r for r in result.runs}
    assert list(runs) == ["sgdsai", "adamw", "adamw-fused"]
    assert (runs["adamw"].impl, runs["adamw-fused"].impl) == ("foreach", "fused")
    assert runs["adamw"].memory.step_transient_bytes == result.model.param_bytes
    assert runs["adamw-fused"].memory.step_transient_bytes == 0
    peak = {name: run.memory.estimated_peak_bytes for name, run in runs.items()}
    rows = {r["optimizer"]: r for r in summary_rows(result)}
    assert rows["sgdsai"]["peak_saving_vs_adamw_bytes"] == peak["adamw"] - peak["sgdsai"]
    assert rows["sgdsai"]["peak_saving_vs_adamw_fused_bytes"] == peak["adamw-fused"] - peak["sgdsai"]
    assert rows["adamw"]["peak_saving_vs_adamw_fused_bytes"] == peak["adamw-fused"] - peak["adamw"] < 0
    assert rows["adamw-fused"]["peak_saving_vs_adamw_fused_bytes"] is None
    # without an adamw-fused run there is one baseline, as before
    rows = summary_rows(profile(model="tiny-gpt2", seq_len=8, device="meta", optimizers=("sgdsai", "adamw")))
    assert rows[0]["peak_saving_vs_adamw_fused_bytes"] is None and rows[0]["peak_saving_vs_adamw_bytes"] > 0
