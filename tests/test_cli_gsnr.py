"""`sgdsai gsnr` end to end: bad inputs with their exit codes, and real tiny runs writing every output."""

from __future__ import annotations

import csv

import pytest
import torch
from typer.testing import CliRunner

from sgdsai_cli.cli import app
from sgdsai_cli.render.gsnr_figures import FIGURES
from sgdsai_cli.schema import load_document

runner = CliRunner()
FAST = ["--steps", "0,2", "--batch-size", "2", "--seq-len", "16"]


def _bad_inputs():
    cases = [
        (["--model", "gpt3"], 2, "unknown model 'gpt3'"),
        (["--model", "tiny-gpt"], 2, "did you mean"),
        (["--model", "tiny-gpt2", "--device", "meta"], 2, "--device meta"),
        (["--model", "tiny-gpt2", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["--model", "tiny-gpt2", "--steps", "10,5"], 2, "bad --steps '10,5'"),
        (["--model", "tiny-gpt2", "--steps", "x"], 2, "bad --steps 'x'"),
        (["--model", "tiny-gpt2", "--steps", "-3"], 2, "bad --steps '-3'"),
        (["--model", "tiny-gpt2", "--data", "{tmp}/missing.txt"], 2, "missing.txt': no such file"),
        (["--model", "tiny-gpt2", "--data", "{tmp}/empty.txt"], 2, "empty.txt': file is empty"),
        (["--model", "tiny-gpt2", "--data", "{tmp}/emptydir"], 2, "no non-empty text files"),
        (["--model", "tiny-gpt2", "--json", "{tmp}/nodir/g.json"], 2, "does not exist"),
        (["--model", "tiny-gpt2", "--json", "{tmp}/emptydir"], 2, "is a directory"),
        (["--model", "tiny-gpt2", "--out", "{tmp}/empty.txt"], 2, "not a folder"),
        (["--model", "tiny-gpt2", "--precision", "fp8"], 2, "unknown precision 'fp8'"),
        (["--model", "tiny-gpt2", "--optimizer", "adamx"], 2, "unknown optimizer 'adamx'"),
        (["--model", "tiny-gpt2", "--batch-size", "0"], 2, "bad --batch-size '0'"),
        (["--model", "tiny-gpt2", "--seq-len", "lots"], 2, "bad --seq-len 'lots'"),
        (["--model", "tiny-gpt2", "--seq-len", "999"], 2, "longer than tiny-gpt2's 128 positions"),
        (["--model", "tiny-vit", "--data", "{tmp}/text.txt"], 2, "synthetic images"),
        (["--model", "tiny-gpt2", "--lr", "fast"], 2, "bad --lr 'fast'"),
        (["--model", "tiny-gpt2", "--lr", "-1"], 2, "bad --lr '-1'"),
        (["--model", "tiny-gpt2", "--seed", "x"], 2, "bad --seed 'x'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", "tiny-gpt2", "--device", "cuda"], 3, "CUDA is not available"))
    return cases


@pytest.mark.parametrize(("args", "code", "needle"), _bad_inputs())
def test_bad_inputs(tmp_path, args, code, needle):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "text.txt").write_text("some text")
    (tmp_path / "emptydir").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = runner.invoke(app, ["gsnr", *args])
    assert res.exit_code == code, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "nodir").exists()


def test_tiny_gpt2_writes_table_json_csv_and_figures(tmp_path):
    out, json_path = tmp_path / "out", tmp_path / "g.json"
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", *FAST,
                              "--out", str(out), "--json", str(json_path)])
    assert res.exit_code == 0, res.output
    for needle in ("g-SNR of tiny-gpt2", "python-stdlib", "token_embedding", "attn_qkv", "mlp_down",
                   "degenerate tensors: none", "stability: from step 0 to 2", "is equal to these step-0"):
        assert needle in res.stdout, needle
    doc = load_document(json_path, kinds=("gsnr",))
    assert doc == load_document(out / "gsnr.json", kinds=("gsnr",))  # the same document, twice
    assert len(doc["tensors"]) == 28 and doc["spec"]["steps"] == [0, 2]
    first = doc["tensors"][0]
    assert set(first) >= {"name", "block_type", "layer", "numel", "shape", "gsnr_init", "gsnr_by_step"}
    assert list(first["gsnr_by_step"]) == ["0", "2"]
    with open(out / "gsnr.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 28 and float(rows[0]["gsnr_init"]) == pytest.approx(first["gsnr_init"])
    for stem in FIGURES:
        for fmt in ("png", "svg"):
            assert (out / f"{stem}.{fmt}").stat().st_size > 5000
    assert f"wrote {json_path}" in res.stderr


def test_json_only_puts_csv_beside_it(tmp_path):
    json_path = tmp_path / "run.json"
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", *FAST, "--json", str(json_path)])
    assert res.exit_code == 0, res.output
    assert load_document(json_path, kinds=("gsnr",))["kind"] == "gsnr"
    assert (tmp_path / "run.csv").read_text().startswith("name,block_type,layer,numel,shape")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.json"]


@pytest.mark.parametrize(
    ("model", "extra", "needles"),
    [
        ("tiny-vit", [], ["synthetic images", "patch_embedding", "class_token"]),
        ("tiny-llama", ["--optimizer", "adamw"], ["adamw", "attn_q ", "mlp_gate", "python-stdlib"]),
        ("tiny-llama", ["--precision", "bf16"], ["bf16", "attn_k "]),
    ],
)
def test_other_models(model, extra, needles):
    res = runner.invoke(app, ["gsnr", "--model", model, "--device", "cpu", *FAST, *extra])
    assert res.exit_code == 0, res.output
    for needle in needles:
        assert needle in res.stdout, needle


def test_data_folder(tmp_path):
    (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 50)
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", *FAST, "--data", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"2,250 bytes of real text from {tmp_path} (1 files)" in res.stdout


def test_divergence_is_reported(tmp_path):
    res = runner.invoke(app, ["gsnr", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "0,2,6",
                              "--batch-size", "2", "--seq-len", "16", "--lr", "50", "--json", str(tmp_path / "g.json")])
    assert res.exit_code == 0, res.output
    assert "warning: training diverged (non-finite loss) at step 3" in res.stdout
    assert load_document(tmp_path / "g.json", kinds=("gsnr",))["training"]["diverged_at_step"] == 3
